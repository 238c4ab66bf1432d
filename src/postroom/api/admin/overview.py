"""``/admin``: is mail flowing, is reputation healthy, is the queue keeping up."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from postroom.api.admin.charts import Line, bar_chart, line_chart, nice_ceiling, percent_label
from postroom.api.admin.session import Session, postroom_of
from postroom.api.admin.templating import render
from postroom.messages import Priority
from postroom.queue.base import Backlog, ReportsBacklog
from postroom.store.dashboard import Dashboard, TimeSeries

router = APIRouter()

BLUE, RED, GREEN, ORANGE, PURPLE, GREY = (
    "#2563eb",
    "#dc2626",
    "#16a34a",
    "#ea580c",
    "#9333ea",
    "#6b7280",
)
_CLASS_COLOURS = {Priority.CRITICAL: RED, Priority.TRANSACTIONAL: BLUE, Priority.MARKETING: PURPLE}
# (bucket seconds, buckets, label format) per span the rate charts can show. Their cost grows
# with the sends in the span (about 1.3 s for a month of a million on SQLite, which would hold
# the embedded server's event loop), so the longest is a week.
_SPANS = {"24h": (3600, 24, "%H:%M"), "7d": (86400, 7, "%a %d")}


@router.get("/admin", response_class=HTMLResponse)
async def overview(
    request: Request, session: Session, span: Literal["24h", "7d"] = "24h"
) -> HTMLResponse:
    pr = postroom_of(request)
    dashboard = Dashboard(pr.db)
    step, buckets, label_format = _SPANS[span]
    per_minute = await dashboard.sends_per_minute(minutes=60)
    feedback = await dashboard.feedback_over_time(step_seconds=step, buckets=buckets)
    counts = await dashboard.status_counts(hours=24)
    queue_chart, queue_error = await _queue_chart(request)
    rates = _rate_charts(feedback, label_format)
    return render(
        request,
        "overview.html",
        session=session,
        page="overview",
        title="Overview",
        span=span,
        counts=counts,
        sent_last_hour=sum(per_minute.values["sent"]),
        per_minute_chart=line_chart(
            "Sends per minute, last hour",
            _labels(per_minute, "%H:%M"),
            [
                Line("sent", per_minute.values["sent"], BLUE),
                Line("failed", per_minute.values["failed"], RED),
            ],
        ),
        delivery_chart=rates[0],
        problem_chart=rates[1],
        queue_chart=queue_chart,
        queue_error=queue_error,
    )


def _labels(series: TimeSeries, fmt: str) -> list[str]:
    return [series.bucket_start(i).strftime(fmt) for i in range(series.buckets)]


def _ratio(part: list[int], whole: list[int]) -> list[float | None]:
    return [p / w if w else None for p, w in zip(part, whole, strict=True)]


def _rate_charts(feedback: TimeSeries, label_format: str) -> tuple[Markup, Markup]:
    """Delivery rate (per sent), and hard+soft bounce (per sent) and complaint (per
    delivered) rates, as the analytics API counts them."""
    values = feedback.values
    labels = _labels(feedback, label_format)
    delivery = line_chart(
        "Delivery rate",
        labels,
        [Line("delivered", _ratio(values["delivered"], values["sent"]), GREEN)],
        y_label=percent_label,
        y_max=1.0,
    )
    bounced = _ratio(values["bounced"], values["sent"])
    complained = _ratio(values["complained"], values["delivered"])
    highest = max((v for v in (*bounced, *complained) if v is not None), default=0.0)
    problems = line_chart(
        "Bounce and complaint rates",
        labels,
        [Line("bounced", bounced, ORANGE), Line("complained", complained, PURPLE)],
        y_label=percent_label,
        y_max=nice_ceiling(highest) if highest > 0 else 0.01,
    )
    return delivery, problems


async def _queue_chart(request: Request) -> tuple[Markup | None, str | None]:
    """Messages waiting or leased per class, and the dead letters; a broker that does not
    answer in time is reported, not raised."""
    queue = postroom_of(request).queue
    try:
        async with asyncio.timeout(5):
            depth = await queue.depth()
            backlog: Backlog | None = None
            if isinstance(queue, ReportsBacklog):
                backlog = await queue.backlog()
    except Exception as exc:  # any broker error: the page must still render
        return None, f"the queue did not answer: {exc or type(exc).__name__}"
    bars = [(_class_label(p, backlog), float(depth.get(p, 0)), _CLASS_COLOURS[p]) for p in Priority]
    if backlog is not None:
        bars.append(("dead letters", float(backlog.dead_letters), GREY))
    return bar_chart("Queue depth per class", bars), None


def _class_label(priority: Priority, backlog: Backlog | None) -> str:
    age = backlog.oldest_age.get(priority) if backlog else None
    if not age:
        return priority.value
    return f"{priority.value} ({_age(age)})"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"
