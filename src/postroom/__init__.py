"""Postroom: email delivery for creator publishing platforms."""

__version__ = "0.1.0"
