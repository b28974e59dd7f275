"""The package version, on the bottom floor so the store can stamp it into every run it writes."""

__version__ = "0.1.0"
