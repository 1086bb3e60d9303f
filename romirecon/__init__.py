"""romirecon: deduplicate and reconcile marketing-finance exports into a ROMI table."""

__version__ = "0.1.0"

__all__ = ["__version__"]
