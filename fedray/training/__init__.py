"""Training: the one local training loop, supervised losses, and evaluation of a model."""
