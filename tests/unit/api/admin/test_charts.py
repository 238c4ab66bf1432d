"""The SVG charts: numbers land where they should, text is escaped, gaps stay gaps."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from postroom.api.admin.charts import (
    Line,
    bar_chart,
    line_chart,
    nice_ceiling,
    percent_label,
)

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ceiling_rounds_up_to_a_readable_top() -> None:
    assert [nice_ceiling(v) for v in (0, 0.7, 1, 3, 7, 12, 0.0042)] == [
        1.0,
        1.0,
        1.0,
        5.0,
        10.0,
        20.0,
        0.005,
    ]


def test_percent_label_keeps_the_decimals_small_rates_need() -> None:
    assert [percent_label(v) for v in (0, 0.0042, 0.051, 0.97)] == ["0%", "0.42%", "5.1%", "97%"]


def test_line_chart_places_points_and_splits_at_gaps() -> None:
    svg = line_chart(
        "Rates <&>",
        ["a", "b", "c", "d"],
        [Line("up", [0.0, 5.0, None, 10.0], "#000")],
        width=400,
        height=200,
    )
    root = ET.fromstring(str(svg))  # well-formed XML, so the title was escaped
    assert root.find(f"{SVG}title").text == "Rates <&>"
    # Only the first two points are consecutive: one polyline; three circles (None has none).
    [polyline] = root.findall(f"{SVG}polyline")
    assert polyline.get("data-series") == "up"
    circles = root.findall(f"{SVG}circle")
    assert [c.find(f"{SVG}title").text for c in circles] == ["a up: 0", "b up: 5", "d up: 10"]
    ys = [float(c.get("cy")) for c in circles]
    assert ys[0] > ys[1] > ys[2]  # higher values are drawn higher
    assert ys[2] == 14.0  # 10 is the top of a 0-10 axis: the plot's top edge


def test_bar_chart_lengths_are_proportional() -> None:
    svg = bar_chart(
        "Depth", [("critical", 0.0, "#f00"), ("marketing", 50.0, "#00f"), ("x", 100.0, "#0f0")]
    )
    root = ET.fromstring(str(svg))
    widths = [float(r.get("width")) for r in root.findall(f"{SVG}rect")]
    assert widths[0] == 0.0 and abs(widths[2] - 2 * widths[1]) < 0.2
    assert re.search(r">100<", str(svg))
