"""The rendering tests' fixtures (template folders in a temporary directory) serve here too."""

from tests.unit.rendering.conftest import write_type

__all__ = ["write_type"]
