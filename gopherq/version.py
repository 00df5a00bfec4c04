"""The package's version: one place, which setup.cfg reads too."""

__version__ = "0.1.0"
