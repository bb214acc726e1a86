"""Simulation on Ray: hospital actors, the driver's round loop, and starting/joining a Ray cluster."""
