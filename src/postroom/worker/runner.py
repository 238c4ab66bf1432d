"""The worker loop: claim batches while there is room, run them concurrently, stop cleanly.

Marketing mail lingers: a claim of marketing messages only that did not fill a batch keeps
claiming for up to ``linger`` seconds, so that newsletters reach the provider in fuller batch
calls. Critical and transactional mail never waits for company.

Deliveries may weigh more than one message (``weigh``): a campaign's chunk job stands for up
to 1,000 recipients. While such heavy jobs are being claimed, claims shrink to what the room
left holds, so one process does not take a whole campaign's chunks from its peers.

Companions are loops that live as long as the worker (the campaign scheduler).

Shutdown (SIGTERM, or the stop event) stops claiming at once, lets in-flight batches finish
within the grace period, and only then cancels; a cancelled batch's messages are released
at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from postroom.messages import Priority
from postroom.queue.base import Delivery, QueueBackend

log = logging.getLogger("postroom.worker")

BatchHandler = Callable[[list[Delivery]], Awaitable[None]]
Companion = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class Worker:
    def __init__(
        self,
        queue: QueueBackend,
        handle: BatchHandler,
        *,
        concurrency: int,
        claim_batch: int,
        poll_interval: float,
        lease_seconds: float,
        shutdown_grace: float,
        max_poll_interval: float = 0.05,
        linger: float = 0.0,
        weigh: Callable[[Delivery], int] | None = None,
        companions: Sequence[Companion] = (),
    ) -> None:
        self.queue = queue
        self.handle = handle
        self.concurrency = concurrency
        self.claim_batch = claim_batch
        self.poll_interval = poll_interval
        self.max_poll_interval = max(max_poll_interval, poll_interval)
        self.lease_seconds = lease_seconds
        self.shutdown_grace = shutdown_grace
        self.linger = linger
        self.weigh = weigh or (lambda _delivery: 1)
        self.companions = list(companions)
        self._heaviest = 1  # of the last claim: sizes the next one
        self._in_flight = 0
        self._room = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def settle_heap() -> None:
        """Keep what a process built at start (modules, compiled templates, settings) out of
        the garbage collector's full passes, which otherwise walk it all and pause the loop
        for milliseconds: a long-running worker process calls this once before its loop."""
        gc.collect()
        gc.freeze()

    def wake(self) -> None:
        """Claim now instead of at the next poll (the API calls this after an enqueue when it
        shares the process with the worker)."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        companions = [asyncio.create_task(companion(stop)) for companion in self.companions]
        try:
            await self._claim_loop(stop)
        finally:
            stop.set()
            await asyncio.gather(*companions, return_exceptions=True)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        idle_wait = self.poll_interval
        while not stop.is_set():
            room = self.concurrency - self._in_flight
            if room <= 0:
                self._room.clear()
                await _first(stop.wait(), self._room.wait())
                continue
            wanted = min(room, self.claim_batch)
            if self._heaviest > 1:
                wanted = max(1, room // self._heaviest)
            try:
                deliveries = await self.queue.receive(wanted, self.lease_seconds)
            except Exception:
                log.exception("claiming from the queue failed; retrying")
                deliveries = []
                idle_wait = self.max_poll_interval
            if deliveries:
                idle_wait = self.poll_interval
                self._heaviest = max(self.weigh(d) for d in deliveries)
                self._start(await self._fill(deliveries, wanted, stop))
                continue
            self._wakeup.clear()
            await _first(stop.wait(), self._wakeup.wait(), asyncio.sleep(idle_wait))
            # Back off while idle so an empty queue costs little; a wake-up resets it.
            idle_wait = min(idle_wait * 2, self.max_poll_interval)
            if self._wakeup.is_set():
                idle_wait = self.poll_interval
        await self._drain()

    async def _fill(
        self, deliveries: list[Delivery], wanted: int, stop: asyncio.Event
    ) -> list[Delivery]:
        """Top up a marketing-only claim for up to ``linger`` seconds (see the module doc)."""
        if self.linger <= 0 or self._heaviest > 1:
            return deliveries
        if any(d.priority is not Priority.MARKETING for d in deliveries):
            return deliveries
        deadline = asyncio.get_running_loop().time() + self.linger
        while len(deliveries) < wanted and not stop.is_set():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.sleep(min(self.poll_interval, left))
            try:
                deliveries += await self.queue.receive(wanted - len(deliveries), self.lease_seconds)
            except Exception:
                log.exception("claiming from the queue failed; sending what is held")
                break
        return deliveries

    def _start(self, deliveries: list[Delivery]) -> None:
        weight = sum(self.weigh(d) for d in deliveries)
        self._in_flight += weight
        task = asyncio.create_task(self._run_batch(deliveries, weight))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, deliveries: list[Delivery], weight: int) -> None:
        try:
            await self.handle(deliveries)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: hand the messages back now rather than at lease end.
            # A message whose provider call was under way stays ``sending`` in the ledger,
            # and its next delivery treats it as ambiguous once the lease has passed.
            await asyncio.shield(self._release(deliveries))
            raise
        except Exception:
            # Leases bring these messages back; the ledger decides what a redelivery means.
            log.exception(
                "a batch of %d messages failed; they return when leases end", len(deliveries)
            )
        finally:
            self._in_flight -= weight
            self._room.set()

    async def _release(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await self.queue.release(delivery)
            except Exception:
                log.exception("could not release message %s; its lease will expire", delivery.id)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info(
            "waiting up to %.0fs for %d in-flight messages", self.shutdown_grace, self._in_flight
        )
        _done, pending = await asyncio.wait(set(self._tasks), timeout=self.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning(
                "cancelled %d batches at shutdown; their messages were released", len(pending)
            )


async def _first(*aws: Awaitable[object]) -> None:
    """Wait until the first of ``aws`` completes and cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
