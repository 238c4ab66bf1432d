"""Benchmarks behind ``postroom bench``: they print the figures the README quotes."""
