"""Inlining CSS once per document shape: every message must read exactly as css_inline's own
inlining of it would, whatever in it comes from data."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import css_inline
import pytest

from postroom.messages import EmailEvent
from postroom.rendering import Renderer, TemplateRegistry
from postroom.rendering.inlining import CLOSE, OPEN, ShapeInliner, mark_value

MakeEvent = Callable[..., EmailEvent]
MakeRenderer = Callable[..., Renderer]
WriteType = Callable[..., Path]

ODD_VALUES = ["plain", "quo\"te & <tag> 'apos'", "ünï©ødé  two  spaces", "", "x" * 300]
STYLE = (
    "<style>p { color: #111; } .a { color: red; } .b { color: blue; }"
    " @media (max-width: 9px) { p { color: #222 } }</style>"
)


class _Events(HTMLParser):
    """What a mail client reads: elements with their attributes (in any order), and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[Any, ...]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", tag, sorted((k, v or "") for k, v in attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        if self.events and self.events[-1][0] == "data":
            self.events[-1] = ("data", self.events[-1][1] + data)
        else:
            self.events.append(("data", data))


def reads(html: str) -> list[tuple[Any, ...]]:
    parser = _Events()
    parser.feed(html)
    parser.close()
    return parser.events


def assert_reads_the_same(shaped: Renderer, whole: Renderer, event: EmailEvent) -> str:
    fast = shaped.render(event, send_id="s1").html
    reference = whole.render(event, send_id="s1").html
    assert OPEN not in fast and CLOSE not in fast
    assert reads(fast) == reads(reference)
    return fast


@pytest.mark.parametrize(
    "email_type", ["new_post_notification", "welcome", "sign_in_link", "receipt"]
)
def test_bundled_types_read_as_css_inline_makes_them(
    bundled: TemplateRegistry,
    make_renderer: MakeRenderer,
    make_event: MakeEvent,
    sample_data: dict[str, dict[str, Any]],
    email_type: str,
) -> None:
    shaped, whole = make_renderer(bundled), make_renderer(bundled, shape_inlining=False)
    for odd in ODD_VALUES:
        data = {
            key: odd if isinstance(value, str) and not value.startswith("http") else value
            for key, value in sample_data[email_type].items()
        }
        event = make_event(email_type, data, recipient_name=odd[:200] or None)
        assert_reads_the_same(shaped, whole, event)


def test_a_value_that_sets_a_class_gets_that_class_style(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    html = "<html><head>" + STYLE + '</head><body><p class="{{ kind }}">{{ who }}</p></body></html>'
    registry = TemplateRegistry.load(write_type("classy", html=html))
    shaped, whole = make_renderer(registry), make_renderer(registry, shape_inlining=False)
    red = assert_reads_the_same(shaped, whole, make_event("classy", {"kind": "a", "who": "x"}))
    blue = assert_reads_the_same(shaped, whole, make_event("classy", {"kind": "b", "who": "y"}))
    assert "color: red" in red and "color: blue" in blue


@pytest.mark.parametrize(
    "html, values",
    [
        # a value in a style sheet
        ("<style>p { color: {{ who }}; }</style><p>text</p>", ["red", "blue"]),
        # a value an attribute selector reads
        (
            '<style>a[href^="https"] { color: green; }</style><a href="{{ who }}">a</a>',
            ["https://x", "http://x"],
        ),
        # text, where :empty makes it matter
        ("<style>p:empty { display: none; }</style><p>{{ who }}</p>", ["", "x"]),
        # a value that is not inside any attribute's quotes
        ("<style>.a { color: red; }</style><p {{ who }}>x</p>", ["class=a", "title=b"]),
        # an unquoted attribute value
        ("<style>.a { color: red; }</style><p class={{ who }}>x</p>", ["a", "b"]),
        ('<style>p[title=""] { color: red; }</style><p title="{{ who }}">x</p>', ["a", ""]),
        # a value right after a bare &: with it, the text reads as a character reference
        ("<p>Terms &{{ who }} more</p><p>&#{{ who }}</p>", ["copy", "amp;", "x"]),
    ],
)
def test_values_that_can_change_styles_or_markup_choose_the_plan(
    write_type: WriteType,
    make_renderer: MakeRenderer,
    make_event: MakeEvent,
    html: str,
    values: list[str],
) -> None:
    source = "<html><head></head><body>" + html + "</body></html>"
    registry = TemplateRegistry.load(write_type("sensitive", html=source))
    shaped, whole = make_renderer(registry), make_renderer(registry, shape_inlining=False)
    outputs = {
        assert_reads_the_same(shaped, whole, make_event("sensitive", {"who": value}))
        for value in values * 2
    }
    assert len(outputs) == len(values)


@pytest.mark.parametrize(
    "html, shown",
    [
        (
            "{% set line %}Hi {{ who }}{% endset %}<p>{{ line|length }} {{ line[:5] }}</p>",
            "6 Hi Bo",
        ),
        (
            "{% macro hi(n) %}Hi {{ n }}{% endmacro %}<p>{{ hi(who)|length }} {{ hi(who) }}</p>",
            "6 Hi Bob",
        ),
    ],
)
def test_output_used_as_a_value_is_never_marked(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent, html: str, shown: str
) -> None:
    # A {% set %} block's capture, or a macro's result in an expression, is measured and cut.
    registry = TemplateRegistry.load(write_type("captured", html=html))
    out = make_renderer(registry).render(make_event("captured", {"who": "Bob"}), send_id="s1")
    assert f"<p>{shown}</p>" in out.html


def test_values_holding_the_mark_characters_are_kept_as_references(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    registry = TemplateRegistry.load(write_type("marks", html="<p>{{ who }}</p>"))
    shaped, whole = make_renderer(registry), make_renderer(registry, shape_inlining=False)
    event = make_event("marks", {"who": f"a{OPEN}b{CLOSE}c"})
    fast = assert_reads_the_same(shaped, whole, event)
    assert "a&#57344;b&#57345;c" in fast


def test_documents_css_inline_must_read_whole_still_get_their_styles() -> None:
    inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
    shapes = ShapeInliner(inliner)
    marked = (
        '<html><head><link rel="stylesheet" href="https://cdn.example/x.css">'
        f"<style>p {{ color: red; }}</style></head><body><p>{mark_value('hi')}</p></body></html>"
    )
    out, _ = shapes.inline(marked)
    assert 'style="color: red;"' in out and OPEN not in out
    assert reads(out) == reads(inliner.inline(marked.replace(OPEN, "").replace(CLOSE, "")))


def test_many_shapes_are_all_served_and_memory_stays_bounded() -> None:
    inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
    shapes = ShapeInliner(inliner, max_plans=4)
    for n in range(12):
        marked = (
            "<html><head><style>.c{color:red}</style></head><body>"
            + "<p class='c'>" * (n % 6)
            + mark_value(f"text {n}")
            + "</body></html>"
        )
        out, printed = shapes.inline(marked)
        assert printed == (f"text {n}",)
        assert reads(out) == reads(inliner.inline(marked.replace(OPEN, "").replace(CLOSE, "")))
        assert f"text {n}" in out
    assert shapes._entries <= 4


def test_unpaired_marks_fall_back_to_reading_the_whole_document() -> None:
    inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
    out, printed = ShapeInliner(inliner).inline(f"<style>p{{color:red}}</style><p>a{OPEN}b</p>")
    assert printed == ()
    assert '<p style="color: red;">ab</p>' in out
