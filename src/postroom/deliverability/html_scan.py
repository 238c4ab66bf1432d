"""One pass over an email's HTML for the content checks (``deliverability/content.py``):
visible text, images, links with their text, and tags left open or closed twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


def words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


_VOID = words("area base br col embed hr img input link meta param source track wbr")
# Elements whose end tag HTML lets you leave out; a missing one is not an authoring error.
_OPTIONAL_END = words(
    "html head body p li dt dd option optgroup tr td th thead tbody tfoot colgroup"
)
_INVISIBLE = frozenset({"head", "style", "script", "title", "template"})


@dataclass(slots=True)
class _Link:
    href: str
    text: list[str] = field(default_factory=list)


class HtmlScan(HTMLParser):
    """One pass over the HTML: visible text, images, links and tag-balance problems."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.links: list[_Link] = []
        self.problems: list[str] = []
        self._stack: list[str] = []
        self._hidden = 0
        self._link: _Link | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs)
        if tag not in _VOID:
            self._stack.append(tag)
            self._hidden += tag in _INVISIBLE

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs)  # <br/>, <img/>: nothing stays open

    def _open(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "a":
            self._link = _Link(dict(attrs).get("href") or "")
            self.links.append(self._link)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._link = None
        if tag in _VOID:
            return
        if tag not in self._stack:
            self.problems.append(f"</{tag}> closes nothing")
            return
        while self._stack:
            top = self._stack.pop()
            self._hidden -= top in _INVISIBLE
            if top == tag:
                break
            if top not in _OPTIONAL_END:
                self.problems.append(f"<{top}> is closed by </{tag}>")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self.text.append(data)
        if self._link is not None:
            self._link.text.append(data)

    def finish(self) -> None:
        self.close()
        self.problems.extend(
            f"<{t}> is never closed" for t in self._stack if t not in _OPTIONAL_END
        )

    @property
    def visible_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def scan_html(html: str) -> HtmlScan:
    scan = HtmlScan()
    scan.feed(html)
    scan.finish()
    return scan
