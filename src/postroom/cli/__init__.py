"""The command-line edge: ``postroom``."""
