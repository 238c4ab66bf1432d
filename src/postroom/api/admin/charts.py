"""Charts as inline SVG, drawn on the server: pure functions from numbers to markup.

No JavaScript and no chart library: the page is complete when it arrives, it works under a
strict Content-Security-Policy (presentation attributes, no inline styles), and a test can
read the numbers back from the ``<title>`` of each point.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup

_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 14, 26
_TICKS = 4


@dataclass(frozen=True, slots=True)
class Line:
    """One series; ``None`` leaves a gap (e.g. a rate of a period with nothing sent)."""

    name: str
    values: Sequence[float | None]
    color: str


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times 10^k at or above ``value`` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = math.pow(10, math.floor(math.log10(value)))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power


def count_label(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def percent_label(value: float) -> str:
    """A fraction as a percentage, with the decimals small rates (complaints) need."""
    percent = value * 100
    if percent == 0 or percent >= 10:
        return f"{percent:.0f}%"
    return f"{percent:.1f}%" if percent >= 1 else f"{percent:.2f}%"


def line_chart(
    title: str,
    labels: Sequence[str],
    lines: Sequence[Line],
    *,
    y_label: Callable[[float], str] = count_label,
    y_max: float | None = None,
    width: int = 640,
    height: int = 220,
) -> Markup:
    """A line per series over ``labels`` (one per point), with a grid, axes and a legend."""
    present = [v for line in lines for v in line.values if v is not None]
    top = y_max if y_max is not None else nice_ceiling(max(present, default=0.0))
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    n = len(labels)

    def x(i: int) -> float:
        return _LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - min(v, top) / top)

    parts = [_open(title, width, height)]
    parts += _grid(top, y_label, width, y)
    every = max(1, math.ceil(n / 6))
    for i in range(0, n, every):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle" font-size="11" '
            f'fill="#6b7280">{_esc(labels[i])}</text>'
        )
    for line in lines:
        for segment in _segments(line.values):
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in segment)
            parts.append(
                f'<polyline class="series" data-series="{_esc(line.name)}" points="{points}" '
                f'fill="none" stroke="{line.color}" stroke-width="2" stroke-linejoin="round"/>'
            )
        for i, v in enumerate(line.values):
            if v is None:
                continue
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{line.color}">'
                f"<title>{_esc(labels[i])} {_esc(line.name)}: {_esc(y_label(v))}</title></circle>"
            )
    parts += _legend([(line.name, line.color) for line in lines], width)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text went through _esc


def bar_chart(
    title: str,
    bars: Sequence[tuple[str, float, str]],
    *,
    value_label: Callable[[float], str] = count_label,
    width: int = 640,
    row_height: int = 34,
) -> Markup:
    """Horizontal bars: (label, value, colour) per row, the value written beside its bar."""
    height = _TOP + row_height * max(1, len(bars)) + 6
    top = nice_ceiling(max((value for _, value, _ in bars), default=0.0))
    plot_w = width - 130 - 90
    parts = [_open(title, width, height)]
    for row, (label, value, color) in enumerate(bars):
        y = _TOP + row * row_height
        bar_w = max(1.0, plot_w * value / top) if value > 0 else 0.0
        parts.append(
            f'<text x="120" y="{y + 18}" text-anchor="end" font-size="12" fill="#374151">'
            f"{_esc(label)}</text>"
            f'<rect class="bar" x="130" y="{y + 4}" width="{bar_w:.1f}" height="{row_height - 12}" '
            f'fill="{color}"><title>{_esc(label)}: {_esc(value_label(value))}</title></rect>'
            f'<text x="{130 + bar_w + 6:.1f}" y="{y + 18}" font-size="12" fill="#111827">'
            f"{_esc(value_label(value))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text went through _esc


def _open(title: str, width: int, height: int) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">'
        f"<title>{_esc(title)}</title>"
    )


def _grid(
    top: float, y_label: Callable[[float], str], width: int, y: Callable[[float], float]
) -> list[str]:
    parts = []
    for tick in range(_TICKS + 1):
        value = top * tick / _TICKS
        at = y(value)
        parts.append(
            f'<line x1="{_LEFT}" y1="{at:.1f}" x2="{width - _RIGHT}" y2="{at:.1f}" '
            f'stroke="{"#9ca3af" if tick == 0 else "#e5e7eb"}" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{at + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#6b7280">{_esc(y_label(value))}</text>'
        )
    return parts


def _legend(entries: Sequence[tuple[str, str]], width: int) -> list[str]:
    parts = []
    x = width - _RIGHT
    for name, color in reversed(entries):
        x -= 14 + 7 * len(name)
        parts.append(
            f'<rect x="{x}" y="2" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="11" font-size="11" fill="#374151">{_esc(name)}</text>'
        )
    return parts


def _segments(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive present values; a single point still gets its circle."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((i, v))
    return [run for run in runs if len(run) > 1]


def _esc(text: str) -> str:
    return html.escape(text, quote=True)
