"""The template registry: loads a folder of email types, checks them, and looks them up by name.

Loading compiles every template once so that a broken folder fails at start-up, not on a send.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from postroom.errors import (
    HeaderInjectionError,
    InvalidMessageError,
    TemplateError,
    UnknownEmailTypeError,
)
from postroom.messages import Priority, check_header_value

LAYOUTS_FOLDER = "_layouts"
SETTINGS_FILE = "email.toml"
HTML_FILE = "body.html"
TEXT_FILE = "body.txt"

# Same rule as EmailEvent.email_type, so every loadable type is also addressable by producers.
_TYPE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_CATEGORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SETTINGS_KEYS = frozenset(
    {"subject", "category", "priority", "marketing", "description", "required", "sample"}
)
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class EmailType:
    """One registered email type: its template sources and how it is queued and labelled."""

    name: str
    subject: str
    html: str
    text: str | None
    category: str
    priority: Priority
    marketing: bool
    description: str = ""
    required: tuple[str, ...] = ()
    # Example template_data: content checks render the type with it when it is registered.
    sample: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def check_data(self, template_data: Mapping[str, Any]) -> None:
        """Refuse data that lacks a variable this type declares as required, so a producer
        hears of it at once instead of finding the email in the dead-letter queue."""
        for name in self.required:
            if name not in template_data:
                raise InvalidMessageError(
                    f"required by email type {self.name!r}", field=f"template_data.{name}"
                )

    def template_names(self) -> dict[str, str]:
        """Loader names of this type's templates, keyed by part ('subject', 'html', 'text')."""
        names = {"subject": f"{self.name}/subject", "html": f"{self.name}/{HTML_FILE}"}
        if self.text is not None:
            names["text"] = f"{self.name}/{TEXT_FILE}"
        return names


def bundled_templates_dir() -> Path:
    """The example email types shipped inside the package."""
    return Path(__file__).parent.parent / "templates"


class TemplateRegistry:
    """Email types by name, plus the shared layouts their templates extend or include.

    Templates are addressed by loader names that mirror the folder: ``welcome/body.html``,
    ``welcome/subject`` and ``_layouts/base.html``.
    """

    def __init__(
        self,
        types: Mapping[str, EmailType],
        layouts: Mapping[str, str] | None = None,
        *,
        origin: Path | None = None,
    ) -> None:
        self._types = dict(types)
        self._sources = _sources(self._types, layouts or {})
        self.origin = origin
        _check_compiles(self._sources, origin)

    @classmethod
    def load(cls, folder: Path) -> TemplateRegistry:
        """Read every ``<folder>/<email_type>/`` and ``<folder>/_layouts/``; raise TemplateError."""
        if not folder.is_dir():
            raise TemplateError(f"templates folder {folder} does not exist or is not a folder")
        types: dict[str, EmailType] = {}
        for entry in sorted(folder.iterdir()):
            if not entry.is_dir() or entry.name.startswith(("_", ".")):
                continue
            types[entry.name] = _load_type(entry)
        if not types:
            raise TemplateError(f"templates folder {folder} holds no email type folders")
        return cls(types, _load_layouts(folder / LAYOUTS_FOLDER), origin=folder)

    def get(self, name: str) -> EmailType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownEmailTypeError(name) from None

    def names(self) -> list[str]:
        return sorted(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[EmailType]:
        return iter(self._types[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._types)

    @property
    def sources(self) -> Mapping[str, str]:
        """Every template source by loader name, for a Jinja ``DictLoader``."""
        return MappingProxyType(self._sources)


def _load_type(path: Path) -> EmailType:
    name = path.name
    if not _TYPE_NAME.match(name):
        raise TemplateError(
            f"{path}: folder name {name!r} is not a valid email type; use lowercase letters, "
            "digits, '_', '.' or '-' (start with a letter or digit), or prefix it with '_' "
            "to mark it as not an email type"
        )
    settings = _read_settings(path / SETTINGS_FILE)
    html_path = path / HTML_FILE
    if not html_path.is_file():
        raise TemplateError(f"{html_path} is missing; every email type needs an HTML body")
    text_path = path / TEXT_FILE
    return EmailType(
        name=name,
        subject=settings["subject"],
        html=_read_text(html_path),
        text=_read_text(text_path) if text_path.is_file() else None,
        category=settings["category"],
        priority=settings["priority"],
        marketing=settings["marketing"],
        description=settings["description"],
        required=settings["required"],
        sample=settings["sample"],
    )


def _read_settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TemplateError(f"{path} is missing; it must set at least 'subject'")
    try:
        raw = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - _SETTINGS_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_SETTINGS_KEYS))
        raise TemplateError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {allowed}")
    subject = raw.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        raise TemplateError(f"{path}: 'subject' is required and must be a non-empty string")
    marketing = raw.get("marketing", False)
    if not isinstance(marketing, bool):
        raise TemplateError(f"{path}: 'marketing' must be true or false")
    default_priority = Priority.MARKETING if marketing else Priority.TRANSACTIONAL
    priority_value = raw.get("priority", default_priority.value)
    try:
        priority = Priority(priority_value)
    except ValueError:
        choices = ", ".join(p.value for p in Priority)
        raise TemplateError(
            f"{path}: unknown priority {priority_value!r}; use one of {choices}"
        ) from None
    category = raw.get("category", "marketing" if marketing else "transactional")
    # The category travels to ESPs as a tag or header, so it must be short and header-safe.
    if not isinstance(category, str) or not _CATEGORY.match(category):
        raise TemplateError(
            f"{path}: 'category' must be 1-64 letters, digits, '_', '.' or '-', got {category!r}"
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise TemplateError(f"{path}: 'description' must be a string")
    required = raw.get("required", [])
    if not isinstance(required, list) or not all(
        isinstance(name, str) and _VARIABLE.match(name) for name in required
    ):
        raise TemplateError(f"{path}: 'required' must be a list of template variable names")
    sample = raw.get("sample", {})
    if not isinstance(sample, dict):
        raise TemplateError(f"{path}: 'sample' must be a table of example template data")
    return {
        "required": tuple(required),
        "sample": MappingProxyType(sample),
        "subject": subject,
        "marketing": marketing,
        "priority": priority,
        "category": category,
        "description": description,
    }


def _load_layouts(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {
        f"{LAYOUTS_FOLDER}/{path.relative_to(folder).as_posix()}": _read_text(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise TemplateError(f"{path} cannot be read: {exc.strerror}") from None


def _sources(types: Mapping[str, EmailType], layouts: Mapping[str, str]) -> dict[str, str]:
    sources: dict[str, str] = {}
    for name, layout in layouts.items():
        if not name.startswith(f"{LAYOUTS_FOLDER}/"):
            raise TemplateError(f"layout {name!r} must be named '{LAYOUTS_FOLDER}/<file>'")
        sources[name] = layout
    for key, email_type in types.items():
        if key != email_type.name or not _TYPE_NAME.match(key):
            raise TemplateError(f"email type {key!r} is registered under a mismatched name")
        try:
            check_header_value(email_type.category, "category")
        except HeaderInjectionError:
            raise TemplateError(f"email type {key!r}: category is not header-safe") from None
        parts = {"subject": email_type.subject, "html": email_type.html, "text": email_type.text}
        for part, loader_name in email_type.template_names().items():
            source = parts[part]
            if source is not None:
                sources[loader_name] = source
    return sources


def _check_compiles(sources: Mapping[str, str], origin: Path | None) -> None:
    """Compile every template and check that each extends/include names a known template."""
    env = ImmutableSandboxedEnvironment()
    for name, source in sources.items():
        filename = _display_name(name)
        if origin is not None:
            filename = str(origin / filename)
        try:
            ast = env.parse(source, name=name, filename=filename)
            env.compile(ast, name=name, filename=filename)
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"{filename}, line {exc.lineno}: {exc.message}; fix the template syntax"
            ) from None
        for referenced in meta.find_referenced_templates(ast):
            if referenced is not None and referenced not in sources:
                raise TemplateError(
                    f"{filename} refers to template {referenced!r}, which does not exist; "
                    f"shared layouts live in {LAYOUTS_FOLDER}/ and are named "
                    f"'{LAYOUTS_FOLDER}/<file>'"
                )


def _display_name(loader_name: str) -> str:
    """The file a loader name came from, for error messages ('x/subject' is in email.toml)."""
    folder, _, part = loader_name.partition("/")
    if folder != LAYOUTS_FOLDER and part == "subject":
        return f"{folder}/{SETTINGS_FILE} (subject)"
    return loader_name
