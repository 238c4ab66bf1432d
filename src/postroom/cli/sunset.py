"""``postroom sunset``: the inactive-subscriber policy, run by a scheduler (cron, a systemd
timer) once a day. A dry run (the default) reports and changes nothing; ``--apply`` enqueues
the re-engagement emails through the normal submission path and sunsets the unresponsive.
The policy itself is ``store/sunset.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from postroom.cli.common import CommandError, run, settings_or_exit, with_postroom

if TYPE_CHECKING:
    from postroom.store.sunset import Quiet
    from postroom.wiring import Postroom

SUBMIT_BATCH = 500  # events per submission: one ledger transaction each
SAMPLE = 5
_NO_TRACKING = {"outbox", "smtp"}  # no webhooks, so no open or click events


@dataclass(frozen=True, slots=True)
class SunsetReport:
    reengage: list[Quiet]
    sunset: list[Quiet]
    waiting: int
    applied: bool
    emails_queued: int = 0  # new ledger rows (a repeated run finds its rows: 0)
    sunset_done: int = 0
    warning: str | None = None


async def run_sunset(
    postroom: Postroom,
    *,
    apply: bool,
    email_type: str | None = None,
    now: datetime | None = None,
) -> SunsetReport:
    """Plan the sunset at ``now`` (default: the clock) and, with ``apply``, act on it."""
    from postroom.messages import EmailEvent
    from postroom.store.sunset import REENGAGEMENT_TYPE, SunsetStore, idempotency_key
    from postroom.submission import submit

    settings = postroom.settings
    email_type = email_type or REENGAGEMENT_TYPE
    if not postroom.registry.get(email_type).marketing:
        raise CommandError(
            f"email type {email_type!r} is not marketing mail; the re-engagement email must "
            "carry the unsubscribe link and postal address (marketing = true)"
        )
    store = SunsetStore(
        postroom.db,
        inactive_days=settings.sunset_inactive_days,
        grace_days=settings.sunset_grace_days,
        email_type=email_type,
        clock=(lambda: now) if now is not None else None,
    )
    plan = await store.plan()
    warning = None
    if settings.provider in _NO_TRACKING:
        warning = (
            f"provider {settings.provider} reports no opens or clicks: every subscriber "
            "looks inactive to this policy"
        )
    report = SunsetReport(plan.reengage, plan.sunset, plan.waiting, apply, warning=warning)
    if not apply:
        return report
    queued = 0
    for start in range(0, len(plan.reengage), SUBMIT_BATCH):
        batch = [
            EmailEvent(
                email_type=email_type,
                recipient_email=quiet.email,
                recipient_name=quiet.name,
                # Fixed for the day, so a second run the same day makes the same document.
                template_data={"inactive_days": settings.sunset_inactive_days},
                metadata={"subscriber_id": quiet.subscriber_id},
                idempotency_key=idempotency_key(quiet.subscriber_id, plan.now),
            )
            for quiet in plan.reengage[start : start + SUBMIT_BATCH]
        ]
        queued += sum(not accepted.duplicate for accepted in await submit(postroom, batch))
    done = await store.mark_sunset(plan.sunset, plan.now)
    return SunsetReport(
        plan.reengage, plan.sunset, plan.waiting, True, queued, done, warning=warning
    )


def sunset(
    apply: Annotated[
        bool, typer.Option("--apply/--dry-run", help="Act; the default only reports.")
    ] = False,
    email_type: Annotated[
        str | None, typer.Option(help="The re-engagement email type; default: reengagement.")
    ] = None,
) -> None:
    """Sunset inactive subscribers: no human open or click in POSTROOM_SUNSET_INACTIVE_DAYS
    (180) → one re-engagement email → still nothing POSTROOM_SUNSET_GRACE_DAYS (30) after it
    → status sunset, which campaigns skip. Run it daily; running it twice sends nothing twice."""
    settings = settings_or_exit()

    async def action(pr: Postroom) -> SunsetReport:
        return await run_sunset(pr, apply=apply, email_type=email_type)

    report = run(with_postroom(settings, action))
    for line in describe(report):
        print(line)


def describe(report: SunsetReport) -> list[str]:
    """The report as lines for people."""
    due, ended = len(report.reengage), len(report.sunset)
    if report.applied:
        lines = [
            f"{due} due the re-engagement email ({report.emails_queued} newly queued)",
            f"{ended} due sunset ({report.sunset_done} changed)",
        ]
    else:
        lines = [f"{due} would get the re-engagement email", f"{ended} would be sunset"]
    lines.append(f"{report.waiting} waiting (email on its way, or within the grace period)")
    for title, group in (("re-engage", report.reengage), ("sunset", report.sunset)):
        if group:
            sample = ", ".join(q.email for q in group[:SAMPLE])
            more = f" and {len(group) - SAMPLE} more" if len(group) > SAMPLE else ""
            lines.append(f"{title}: {sample}{more}")
    if report.warning:
        lines.append(f"warning: {report.warning}")
    if not report.applied:
        lines.append("dry run: nothing was changed; run with --apply to act")
    return lines
