"""Metrics: segmentation counts and Dice."""
