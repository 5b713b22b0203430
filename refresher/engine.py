"""The refresh scheduler: coalescing + write budget + retries, no Kafka.

Requests are :meth:`Engine.submit`-ted as items keyed by Warehouse. One
scheduler task claims due Warehouses from the :class:`Coalescer` in due order,
waits for a token from the global :class:`TokenBucket`, then starts the patch
in its own task (at most ``concurrency`` at once), so a Warehouse in backoff
or a slow patch never blocks the others. Outcomes go to a :class:`Sink`:
satisfied, dropped (404), rejected (403/422: dead-letter) — or, for transient
errors, the items return to the coalescer, due after a jittered backoff that
honours ``Retry-After`` (a 429 also pauses the whole budget for that long).

Only API errors (:class:`KubeError`) are outcomes. Any other exception from a
patch or from the sink is a bug: the scheduler task fails with it (the service
crashes and restarts), and the requests involved stay unsatisfied, so their
offsets are never committed and they are consumed and patched again after the
restart — never dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pushrelay.core.events import RefreshRequest, WarehouseRef
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.kube.errors import KubeError
from refresher.bucket import TokenBucket
from refresher.coalescer import Coalescer
from refresher.patcher import Outcome, Patched, outcome_of

log = logging.getLogger(__name__)

Clock = Callable[[], float]
#: Idle Warehouses are forgotten this often (s): a slot outlives its window by at
#: most this, so memory follows the refresh rate, not the number of Warehouses.
PRUNE_EVERY = 5.0


@dataclass(frozen=True)
class Item:
    """One consumed refresh request and where it came from."""

    request: RefreshRequest
    ticket: Any  # a watermark Ticket; opaque here
    raw: bytes | None = None
    key: bytes | None = None

    @property
    def warehouse(self) -> WarehouseRef:
        return self.request.warehouse


class Sink(Protocol):
    def alive(self, item: Item) -> bool: ...
    async def satisfied(self, ref: WarehouseRef, items: list[Item], patched: Patched,
                        seconds: float) -> None: ...
    async def dropped(self, ref: WarehouseRef, items: list[Item], error: KubeError) -> None: ...
    async def rejected(self, ref: WarehouseRef, items: list[Item], error: KubeError) -> bool: ...
    def retrying(self, ref: WarehouseRef, items: list[Item], error: KubeError,
                 delay: float) -> None: ...


Refresh = Callable[[WarehouseRef], Awaitable[Patched]]


class Engine:
    def __init__(
        self, *, refresh: Refresh, sink: Sink, interval: float, bucket: TokenBucket,
        backoff: Backoff, concurrency: int = 32, clock: Clock = time.monotonic,
    ) -> None:
        self._refresh = refresh
        self._sink = sink
        self._bucket = bucket
        self._backoff = backoff
        self._clock = clock
        self._co: Coalescer[WarehouseRef, Item] = Coalescer(interval)
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._last_prune = clock()
        self._fatal: BaseException | None = None
        self.patches_started = 0

    # ---- feeding -------------------------------------------------------------
    def submit(self, item: Item) -> None:
        self._co.add(item.warehouse, item, self._clock())
        self._wake.set()

    def discard(self, predicate: Callable[[Item], bool]) -> list[Item]:
        """Forget pending items (their partition was revoked)."""
        return self._co.discard(predicate)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def pending(self) -> int:
        return self._co.pending_total()

    # ---- lifecycle -----------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Start the scheduler; the caller owns (and watches) the returned task."""
        if self._scheduler is None:
            self._scheduler = asyncio.create_task(self._schedule(), name="refresher:scheduler")
        return self._scheduler

    async def stop(self, drain_timeout: float) -> int:
        """Stop starting patches; let running ones finish within ``drain_timeout``.

        Returns how many were cancelled (their requests stay uncommitted and are
        consumed again by the next owner). Idempotent.
        """
        task, self._scheduler = self._scheduler, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        running = set(self._tasks)
        if running:
            await asyncio.wait(running, timeout=max(0.0, drain_timeout))
        left = [t for t in running if not t.done()]
        for t in left:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        return len(left)

    # ---- scheduling ----------------------------------------------------------
    async def _claim(self) -> WarehouseRef:
        while True:
            if self._fatal is not None:
                raise self._fatal
            self._wake.clear()
            now = self._clock()
            if now - self._last_prune > PRUNE_EVERY:
                self._co.prune(now)
                self._last_prune = now
            key = self._co.pop_due(now)
            if key is not None:
                return key
            due = self._co.next_due()
            if due is None:  # nothing pending: no timer to arm
                await self._wake.wait()
                continue
            try:
                async with asyncio.timeout(max(0.0, due - now)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _schedule(self) -> None:
        while True:
            await self._sem.acquire()
            key: WarehouseRef | None = None
            try:
                key = await self._claim()
                await self._bucket.acquire()
            except BaseException:
                self._sem.release()
                if key is not None:
                    self._co.release(key)
                raise
            items = self._co.start(key, self._clock())
            alive = [i for i in items if self._sink.alive(i)]
            if not alive:
                self._bucket.refund()
                self._co.release(key)
                self._sem.release()
                continue
            self.patches_started += 1
            task = asyncio.create_task(self._attempt(key, alive), name=f"refresh:{key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _attempt(self, key: WarehouseRef, items: list[Item]) -> None:
        started = self._clock()
        try:
            try:
                patched = await self._refresh(key)
            except KubeError as error:
                await self._failed(key, items, error)
                return
            self._co.succeeded(key, self._clock())
            await self._sink.satisfied(key, items, patched, self._clock() - started)
        except Exception as exc:
            # A bug: fail the scheduler (and so the service) instead of guessing an
            # outcome; the items stay claimed and unsatisfied, redone after restart.
            log.exception("refresh failed unexpectedly", extra={"warehouse": str(key)})
            if self._fatal is None:
                self._fatal = exc
        finally:
            self._sem.release()
            # The scheduler needs waking only if this attempt scheduled the Warehouse
            # again (requests arrived meanwhile, or a retry) or failed it; a waiter on
            # the semaphore is woken by the release. A leading-edge patch alone (the
            # common case under a steady rate) then costs no scheduler pass.
            if self._fatal is not None or self._co.pending(key):
                self._wake.set()

    async def _failed(self, key: WarehouseRef, items: list[Item], error: KubeError) -> None:
        outcome = outcome_of(error)
        if outcome is Outcome.DROP:
            self._co.settled(key)
            await self._sink.dropped(key, items, error)
            return
        if outcome is Outcome.REJECT:
            if await self._sink.rejected(key, items, error):
                self._co.settled(key)
                return
        attempt = self._co.failures(key) + 1
        delay = self._backoff.delay(attempt, error.retry_after)
        if error.status == 429 and error.retry_after:
            self._bucket.pause(error.retry_after)
        alive = [i for i in items if self._sink.alive(i)]
        self._co.failed(key, alive, self._clock() + delay)
        self._sink.retrying(key, alive, error, delay)
