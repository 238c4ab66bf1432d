"""CSS inlining done once per document shape rather than once per message.

Inlining (css_inline: parse the document, match every rule, write it back) was the largest
part of a transactional worker's CPU, about 40%. Yet the messages of one email type differ
only in their data. HTML templates mark every value they print (``mark_value``, their Jinja
``finalize``), and a document's *shape* is its HTML with the marked values taken out.

The first document of a shape is studied: each value's place is found in the document with
the values replaced by numbered tokens. A value in text, or in a quoted attribute that no
selector reads (``href``, ``src``, ``alt`` ...), cannot change any element's style, since
selectors see elements, classes, ids and attributes and never text. Any other place (a
``class``, ``id`` or ``style`` value, an attribute a selector names, a style sheet, the inside
of a tag) is *sensitive*: its value is part of what a plan is kept for. A style sheet that uses
``:empty`` or ``:blank`` makes text sensitive too, and so is a value right after a bare ``&``
(with it, the markup could read as a character reference).

A *plan* is css_inline's output for the shape with the sensitive values filled in and the
others left as tokens, cut at the tokens; a document is its plan with its own values put back
(escaped by Jinja, as the template printed them). A document with ``<link>`` tags or
css_inline directives, or whose tokens css_inline did not keep exactly once each, goes through
css_inline whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import css_inline
from jinja2 import Environment, nodes
from markupsafe import Markup, escape

OPEN, CLOSE = "\ue000", "\ue001"  # private-use characters around each printed value
_ALWAYS_READ = frozenset({"class", "id", "style", "lang", "dir"})
_TAG = re.compile(r"""<[A-Za-z!/?](?:[^<>"']|"[^"]*"|'[^']*')*>""")
_ATTRIBUTE = re.compile(r"""([^\s"'<>/=]+)\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+)""")
_STYLE_SHEET = re.compile(r"<style\b[^>]*>(.*?)(?:</style\s*>|$)", re.S | re.I)
_SELECTOR_ATTRIBUTE = re.compile(r"\[\s*([-\w:]+)")
_TOKEN = re.compile(f"{OPEN}(\\d+){CLOSE}")
_OPEN_REFERENCE = re.compile(r"&[#\w]*$")
_UNPLANNABLE = re.compile(r"<link\b|data-css-inline", re.I)
_MAX_PLANS = 512
_CAPTURING = (nodes.AssignBlock, nodes.FilterBlock, nodes.CallBlock)
_REFERRING = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def mark_value(value: Any) -> Any:
    """Jinja ``finalize`` for HTML templates: a printed value between OPEN and CLOSE (which
    autoescape leaves alone while escaping the value). Markup (a macro's output, ``|safe``)
    stays unmarked: it is part of the shape."""
    if type(value) is str:
        text = value
    elif hasattr(value, "__html__"):
        return value
    else:
        text = str(value)
    if OPEN in text or CLOSE in text:  # written as references, so no mark is ever ambiguous
        escaped = str(escape(text)).replace(OPEN, "&#57344;").replace(CLOSE, "&#57345;")
        return Markup(f"{OPEN}{escaped}{CLOSE}")  # noqa: S704 - escaped just above
    return f"{OPEN}{text}{CLOSE}"


def strip_marks(html: str) -> str:
    return html.replace(OPEN, "").replace(CLOSE, "")


@dataclass(frozen=True, slots=True)
class _Plan:
    pieces: tuple[str, ...]  # css_inline's output cut at the tokens
    order: tuple[int, ...]  # the value that follows each piece but the last


@dataclass(slots=True)
class _Shape:
    sensitive: tuple[int, ...]  # values that choose the plan
    plans: dict[tuple[str, ...], _Plan | None] = field(default_factory=dict)


class ShapeInliner:
    """Inlines the CSS of documents rendered with ``mark_value`` as ``inliner`` would,
    reusing each shape's work; the result carries no marks."""

    def __init__(self, inliner: css_inline.CSSInliner, max_plans: int = _MAX_PLANS) -> None:
        self._inliner = inliner
        self._shapes: dict[str, _Shape | None] = {}
        self._entries = 0  # shapes studied and plans made since the last clearing
        self._max_plans = max_plans

    def inline(self, marked: str) -> tuple[str, tuple[str, ...]]:
        """The document, and the values it printed (none where its marks do not pair).
        Raises what css_inline raises."""
        split = _split(marked)
        if split is None:
            return self._inliner.inline(strip_marks(marked)), ()
        statics, values = split
        return self._inline(statics, values, marked), tuple(values)

    def _inline(self, statics: list[str], values: list[str], marked: str) -> str:
        key = OPEN.join(statics)
        if key in self._shapes:
            shape = self._shapes[key]
        else:
            shape = self._shapes[key] = self._study(statics, values)
        if shape is None:
            return self._inliner.inline(strip_marks(marked))
        chosen = tuple(values[n] for n in shape.sensitive)
        if chosen in shape.plans:
            plan = shape.plans[chosen]
        else:
            plan = shape.plans[chosen] = self._plan(statics, values, shape.sensitive)
        if plan is None:
            return self._inliner.inline(strip_marks(marked))
        out = [plan.pieces[0]]
        for n, piece in zip(plan.order, plan.pieces[1:], strict=True):
            out.append(values[n])
            out.append(piece)
        return "".join(out)

    def _study(self, statics: list[str], values: list[str]) -> _Shape | None:
        self._count_plan()
        sensitive: set[int] = set()
        while True:  # a value a style sheet holds can name one more attribute as read
            document = _fill(statics, values, sensitive)
            if _UNPLANNABLE.search(document):
                return None
            found = _sensitive_places(document)
            if found <= sensitive:
                return _Shape(tuple(sorted(sensitive)))
            sensitive |= found

    def _plan(
        self, statics: list[str], values: list[str], sensitive: tuple[int, ...]
    ) -> _Plan | None:
        self._count_plan()
        document = _fill(statics, values, set(sensitive))
        if _UNPLANNABLE.search(document) or _sensitive_places(document) - set(sensitive):
            return None  # the sensitive values changed the document's reading: no plan
        parts = _TOKEN.split(self._inliner.inline(document))
        order = tuple(int(n) for n in parts[1::2])
        if sorted(order) != sorted(set(range(len(values))) - set(sensitive)):
            return None  # a token css_inline dropped or copied: the plan cannot place it
        return _Plan(tuple(parts[0::2]), order)

    def _count_plan(self) -> None:
        self._entries += 1
        if self._entries > self._max_plans:  # many shapes: start over rather than grow
            self._shapes.clear()
            self._entries = 1


def _split(marked: str) -> tuple[list[str], list[str]] | None:
    """The document between marked values, and the values; None if the marks do not pair."""
    parts = marked.split(OPEN)
    if CLOSE in parts[0]:
        return None
    statics, values = [parts[0]], []
    for part in parts[1:]:
        value, closed, rest = part.partition(CLOSE)
        if not closed or CLOSE in rest:
            return None
        values.append(value)
        statics.append(rest)
    return statics, values


def _fill(statics: list[str], values: list[str], chosen: set[int]) -> str:
    """The document with the ``chosen`` values in place and a numbered token for each other."""
    out = [statics[0]]
    for n, static in enumerate(statics[1:]):
        out.append(values[n] if n in chosen else f"{OPEN}{n}{CLOSE}")
        out.append(static)
    return "".join(out)


def _sensitive_places(document: str) -> set[int]:
    """The tokens of ``document`` whose value could change some element's style, or how the
    markup just before it reads (after a bare ``&``, the value could end a character
    reference that a token would leave as text)."""
    sheets = [m.span(1) for m in _STYLE_SHEET.finditer(document)]
    css = " ".join(document[a:b] for a, b in sheets)
    read = _ALWAYS_READ | {name.lower() for name in _SELECTOR_ATTRIBUTE.findall(css)}
    text_matters = ":empty" in css or ":blank" in css
    in_tags = {}
    for tag in _TAG.finditer(document):
        for token in _TOKEN.finditer(tag.group(0)):
            in_tags[int(token.group(1))] = (tag.group(0), token.start())
    sensitive = set()
    for token in _TOKEN.finditer(document):
        n, start, end = int(token.group(1)), token.start(), token.end()
        if _OPEN_REFERENCE.search(document, max(0, start - 40), start):
            sensitive.add(n)
        elif n in in_tags:
            if not _in_unread_value(*in_tags[n], read):
                sensitive.add(n)
        elif (
            not _between_tags(document, start, end)
            or text_matters
            or any(a <= start < b for a, b in sheets)
        ):
            sensitive.add(n)
    return sensitive


def _between_tags(document: str, start: int, end: int) -> bool:
    """Text by the nearest angle brackets: a ``>`` before and a ``<`` after. A token in a tag
    the tag pattern could not read is not text."""
    if document.rfind("<", 0, start) > document.rfind(">", 0, start):
        return False
    after_lt, after_gt = document.find("<", end), document.find(">", end)
    return after_gt == -1 or (after_lt != -1 and after_lt < after_gt)


def _in_unread_value(tag: str, at: int, read: frozenset[str] | set[str]) -> bool:
    """Whether position ``at`` of ``tag`` is inside the quoted value of an attribute that no
    selector reads."""
    for attribute in _ATTRIBUTE.finditer(tag):
        start, end = attribute.span(2)
        if start < at < end:
            quoted = attribute.group(2)[0] in "\"'"
            return quoted and attribute.group(1).lower() not in read
    return False


def prints_values_only(env: Environment, sources: Mapping[str, str], name: str) -> bool:
    """Whether template ``name``, and every template it extends, includes or imports, only
    ever prints rendered output: marks are characters, so output captured into a variable
    (``{% set %}…{% endset %}``, ``{% filter %}``, ``caller()``, a macro's result used in an
    expression) would be measured, compared or cut with its marks in it."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current not in sources:
            return False
        tree = env.parse(sources[current])
        if next(tree.find_all(_CAPTURING), None) is not None:
            return False
        for node in tree.find_all(_REFERRING):
            template = getattr(node, "template", None)
            if not isinstance(template, nodes.Const):
                return False  # a template chosen at render time: cannot be read here
            todo.append(template.value)
        if _uses_rendered_output(tree):
            return False
    return True


def _uses_rendered_output(tree: nodes.Template) -> bool:
    """A call that returns rendered output (a macro, ``super()``, ``self.block()``) anywhere
    but printed as it is."""
    renders = {macro.name for macro in tree.find_all(nodes.Macro)} | {"super", "caller"}
    aliases = {"self"}
    for node in tree.find_all(nodes.FromImport):
        renders |= {n if isinstance(n, str) else n[1] for n in node.names}
    for imported in tree.find_all(nodes.Import):
        aliases.add(imported.target)
    printed = {id(child) for output in tree.find_all(nodes.Output) for child in output.nodes}
    for call in tree.find_all(nodes.Call):
        callee = call.node
        if isinstance(callee, nodes.Name):
            makes_markup = callee.name in renders
        elif isinstance(callee, nodes.Getattr) and isinstance(callee.node, nodes.Name):
            makes_markup = callee.node.name in aliases
        else:
            makes_markup = True  # a call the names here cannot tell: assume the worst
        if makes_markup and id(call) not in printed:
            return True
    return False
