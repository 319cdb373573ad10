"""scaling-harness: train scaling grids of transformer LMs and fit scaling laws."""

__version__ = "0.1.0"
__all__ = ["__version__"]
