"""strata: a hybrid image/package system for operating-system updates."""

__version__ = "0.1.0"
