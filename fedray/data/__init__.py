"""Data: phantom generation, site reading, per-hospital datasets."""
