"""fedray: federated multi-organ CT segmentation with partially labelled hospitals, on Ray."""

__version__ = "0.1.0"
__all__ = ["__version__"]
