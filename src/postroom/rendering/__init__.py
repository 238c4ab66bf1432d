"""Email rendering: the template registry, the sandboxed renderer and unsubscribe tokens."""

from postroom.rendering.registry import EmailType, TemplateRegistry, bundled_templates_dir
from postroom.rendering.renderer import Renderer
from postroom.rendering.unsubscribe import (
    UnsubscribeClaim,
    UnsubscribeTokens,
    make_token,
    read_token,
)

__all__ = [
    "EmailType",
    "Renderer",
    "TemplateRegistry",
    "UnsubscribeClaim",
    "UnsubscribeTokens",
    "bundled_templates_dir",
    "make_token",
    "read_token",
]
