"""Garrison: one chain of trust from the factory to devices in the field."""

__version__ = "0.1.0"
