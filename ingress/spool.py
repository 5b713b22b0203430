"""The ingress's spool: pushes Kafka cannot take in time, fsync'd locally, forwarded later.

The design is docs/bus.md, "The ingress spool". A :class:`Spool` is one topic
(one partition) of a :class:`pushrelay.infra.bus.store.LogStore` in
``PUSHRELAY_SPOOL_DIR``; the store is SQLite (WAL, ``synchronous=FULL``), all of
its work on its own thread, concurrent appends grouped into one transaction.

* :meth:`Spool.append` returns once the event is durable, or raises
  :class:`SpoolRefused` with a reason (counted in
  ``pushrelay_spool_refused_total{reason}``): over ``spool_max_bytes``
  (``full``), the oldest undrained event older than ``spool_max_age``
  (``too_old``), or the store could not write (``unavailable``: disk full, I/O
  error). Nothing refused was written; the ingress then answers 503.
* :attr:`Spool.pending` is true while anything is undrained *or being
  appended*: the ingress sends every new event to the spool while it is, so
  per-key order holds (an append in flight counts, or a later event could
  overtake it straight into Kafka).
* :class:`Forwarder` is the one reader: it drains the spool in order into the
  push topic in batches, waits for every ack, then commits the spool's offset
  (at least once: a crash in between re-sends the batch, a harmless duplicate),
  and prunes what is drained. A record Kafka will never take
  (:class:`RecordRejected`) or one that no longer decodes goes to the
  dead-letter topic instead of blocking the spool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from pushrelay.core.deliveries import DeliveryFact
from pushrelay.core.events import DeadLetter, InvalidEvent, PushEvent, decode_push, encode
from pushrelay.infra import metrics
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.bus.api import (
    BusError,
    Producer,
    Record,
    RecordRejected,
    TopicPartition,
)
from pushrelay.infra.bus.kafka import DEAD_LETTER_PAYLOAD_LIMIT, watchdog_timeout
from pushrelay.infra.settings import IngressSettings

log = logging.getLogger(__name__)

#: The spool's one topic and partition inside its store, and the forwarder's group.
TOPIC = "spool"
PARTITION = 0
TP = TopicPartition(TOPIC, PARTITION)
GROUP = "forwarder"
#: Dead letters from the spool name this stage.
STAGE = "ingress-spool"

RefusalReason = Literal["full", "too_old", "unavailable"]


class SpoolStore(Protocol):
    """What the spool needs of :class:`pushrelay.infra.bus.store.LogStore`."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def append(self, records: Sequence[tuple[str, int, bytes | None, bytes]]
                     ) -> list[int]: ...
    async def read(self, topic: str, partition: int, offset: int,
                   max_records: int) -> list[Record]: ...
    def end_offset(self, topic: str, partition: int) -> int: ...
    async def wait(self, topic: str, partition: int, offset: int,
                   timeout: float) -> bool: ...  # noqa: ASYNC109 - LogStore's API
    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None: ...
    def committed(self, group: str, tp: TopicPartition) -> int | None: ...
    async def prune(self, topic: str, *, before_time: float, consumed_by: str) -> int: ...
    def stats(self, topic: str) -> StoreStatsLike: ...


class StoreStatsLike(Protocol):
    @property
    def records(self) -> int: ...
    @property
    def bytes(self) -> int: ...


class SpoolRefused(Exception):
    """The spool did not take the event (nothing was written): a 503."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"spool {reason.replace('_', ' ')}: {detail}")
        self.reason = reason


# ---- the pure part: state, bounds, what /readyz says ----------------------------

@dataclass(frozen=True, slots=True)
class SpoolState:
    """A snapshot of the spool."""

    #: Events not yet in Kafka.
    depth: int
    #: Bytes stored (drained records count until they are pruned).
    stored_bytes: int
    #: When the oldest undrained event was spooled (epoch s), None when drained.
    oldest: float | None

    def oldest_age(self, now: float) -> float:
        return 0.0 if self.oldest is None else max(0.0, now - self.oldest)


@dataclass(frozen=True, slots=True)
class SpoolBounds:
    max_bytes: int
    max_age: float

    def refusal(self, state: SpoolState, size: int, now: float) -> SpoolRefused | None:
        """Why an event of ``size`` bytes may not be appended now, or None."""
        if state.stored_bytes + size > self.max_bytes:
            return SpoolRefused("full", f"{state.stored_bytes} of {self.max_bytes} bytes used")
        age = state.oldest_age(now)
        if age > self.max_age:
            return SpoolRefused("too_old", f"the oldest spooled event is {age:.0f} s old "
                                           f"(PUSHRELAY_SPOOL_MAX_AGE {self.max_age:.0f} s)")
        return None


def describe(state: SpoolState, cause: str | None, now: float) -> str:
    """The degraded note of a non-empty spool (``/readyz``), e.g.
    ``spooling: Kafka unavailable (timed out); 120 events, oldest 35 s``."""
    why = f"Kafka unavailable ({cause})" if cause else "Kafka unavailable"
    return (f"spooling: {why}; {state.depth} event{'s' if state.depth != 1 else ''}, "
            f"oldest {state.oldest_age(now):.0f} s")


# ---- the spool -------------------------------------------------------------------

class Spool:
    """One store, one partition: ``append`` (durable on return), read, mark drained.

    ``open()`` takes the store's lock and validates it (a corrupt, foreign or
    locked spool raises the store's :class:`BusError`, never empties it);
    ``close()`` is idempotent. Only the :class:`Forwarder` reads and marks.
    """

    def __init__(self, store: SpoolStore, bounds: SpoolBounds,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._bounds = bounds
        self._clock = clock
        self._open = False
        self._committed = 0
        self._oldest: float | None = None
        self._appending = 0
        #: Why the last event was spooled (the publish error), for the degraded note.
        self.cause: str | None = None

    @classmethod
    def in_directory(cls, settings: IngressSettings) -> Spool:
        """The spool in ``settings.spool_dir`` (which must be set)."""
        from pushrelay.infra.bus.store import LogStore

        if not settings.spool_dir:
            raise ValueError("PUSHRELAY_SPOOL_DIR is not set")
        store = LogStore(settings.spool_dir, max_bytes=settings.spool_max_bytes,
                         filename="spool.db")
        return cls(store, SpoolBounds(settings.spool_max_bytes, settings.spool_max_age))

    async def open(self) -> None:
        if self._open:
            return
        await self._store.open()
        self._open = True
        self._committed = self._store.committed(GROUP, TP) or 0
        await self._find_oldest()
        state = self.state()
        if state.depth:
            log.warning("spool holds undrained events", extra={
                "depth": state.depth, "oldest_age": round(state.oldest_age(self._clock()))})
        self.export_metrics()

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        await self._store.close()

    # ---- what the ingress asks ---------------------------------------------------
    @property
    def pending(self) -> bool:
        """Anything not yet in Kafka, or being appended: new events must queue behind."""
        return self._appending > 0 or self._end() > self._committed

    def state(self) -> SpoolState:
        depth = self._end() - self._committed if self._open else 0
        size = self._store.stats(TOPIC).bytes if self._open else 0
        return SpoolState(depth, size, self._oldest if depth else None)

    def degraded(self) -> str | None:
        """The degraded note while anything is spooled, else None."""
        if not self._open or not self.pending:
            return None
        return describe(self.state(), self.cause, self._clock())

    async def append(self, event: PushEvent, cause: str | None = None) -> None:
        """Make ``event`` durable in the spool (fsync'd on return), or raise
        :class:`SpoolRefused` having written nothing."""
        if not self._open:
            raise SpoolRefused("unavailable", "the spool is not open")
        value = encode(event)
        refused = self._bounds.refusal(self.state(), len(value), self._clock())
        if refused is not None:
            metrics.spool_refused.labels(refused.reason).inc()
            raise refused
        self._appending += 1
        try:
            await self._store.append([(TOPIC, PARTITION, event.key, value)])
        except BusError as exc:
            metrics.spool_refused.labels("unavailable").inc()
            raise SpoolRefused("unavailable", str(exc) or type(exc).__name__) from exc
        finally:
            self._appending -= 1
        if self._oldest is None:
            self._oldest = self._clock()
        if cause is not None:
            self.cause = cause
        metrics.spool_appended.inc()
        self.export_metrics()

    # ---- what the forwarder does ---------------------------------------------------
    async def next_batch(self, max_records: int, wait: float) -> list[Record]:
        """The oldest undrained records (at most ``max_records``); waits up to
        ``wait`` s for one (empty: none came)."""
        if self._end() <= self._committed and not await self._store.wait(
                TOPIC, PARTITION, self._committed, wait):
            return []
        return await self._store.read(TOPIC, PARTITION, self._committed, max_records)

    async def mark_drained(self, next_offset: int) -> None:
        """Every record below ``next_offset`` is in Kafka (or dead-lettered)."""
        await self._store.commit(GROUP, {TP: next_offset})
        self._committed = next_offset
        await self._find_oldest()
        self.export_metrics()

    async def prune(self) -> int:
        """Delete drained records; how many."""
        removed = await self._store.prune(TOPIC, before_time=self._clock() + 1,
                                          consumed_by=GROUP)
        self.export_metrics()
        return removed

    # ---- internals ---------------------------------------------------------------------
    def _end(self) -> int:
        return self._store.end_offset(TOPIC, PARTITION) if self._open else 0

    async def _find_oldest(self) -> None:
        """The spooling time of the first undrained record (None when drained)."""
        if self._end() <= self._committed:
            self._oldest = None
            return
        first = await self._store.read(TOPIC, PARTITION, self._committed, 1)
        self._oldest = first[0].timestamp if first else None

    def export_metrics(self) -> None:
        state = self.state()
        metrics.spool_depth.set(state.depth)
        metrics.spool_bytes.set(state.stored_bytes)
        metrics.spool_oldest_age.set(state.oldest_age(self._clock()))


# ---- the forwarder ----------------------------------------------------------------

#: Between attempts to forward a batch Kafka did not take: 0.5 s doubling, up to 10 s.
FORWARD_BACKOFF = Backoff(base=0.5, max_delay=10.0)
BATCH = 500
#: Longest idle wait for a new spooled record before re-checking (and updating gauges).
IDLE_WAIT = 1.0

#: While draining, prune what is drained at least this often (s).
PRUNE_INTERVAL = 10.0

OnFact = Callable[[DeliveryFact], None]


@dataclass(slots=True)
class _Item:
    """One spooled record on its way to Kafka."""

    record: Record
    event: PushEvent | None = None
    future: asyncio.Future[None] | None = None
    #: Why it goes to the dead letters instead (None: it is forwarded).
    problem: str | None = None


def forwarded_fact(event: PushEvent, spooled_at: float, *, failed: str | None = None,
                   ) -> DeliveryFact | None:
    """The delivery record of a spooled event once forwarded (or dead-lettered)."""
    if event.delivery is None:
        return None
    return DeliveryFact(
        delivery=event.delivery, stage="ingress", outcome="failed" if failed else "accepted",
        receiver=event.receiver, project=event.scope.project, repository=event.repository,
        tags=list(event.tags), reason=failed,
        spooled_at=datetime.fromtimestamp(spooled_at, UTC))


class Forwarder:
    """Drains a :class:`Spool` into the push topic, in order, at least once.

    ``start()`` creates the task (the service owns it: :attr:`task`);
    ``stop(within)`` lets a batch being forwarded finish for up to ``within``
    seconds (so its acks can be committed), then cancels. Both idempotent.
    """

    def __init__(self, spool: Spool, producer: Producer, settings: IngressSettings,
                 on_fact: OnFact | None = None, *, backoff: Backoff = FORWARD_BACKOFF,
                 batch: int = BATCH) -> None:
        self._spool = spool
        self._producer = producer
        self._settings = settings
        self._on_fact = on_fact
        self._backoff = backoff
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        #: The last reason a batch was not forwarded (None once one was).
        self.last_error: str | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="ingress:spool-forwarder")

    async def stop(self, within: float) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if not self._idle.is_set():
            try:
                async with asyncio.timeout(within):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("spool forwarder stopped with a batch in flight (it is re-sent "
                            "after the restart)")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        pruned_at = loop.time()
        while not self._stopping:
            records = await self._spool.next_batch(self._batch, IDLE_WAIT)
            if not records:
                self._spool.export_metrics()  # the oldest age moves on
                continue
            self._idle.clear()
            try:
                facts = await self._forward(records)
            except (BusError, TimeoutError) as exc:
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                delay = self._backoff.delay(failures)
                if failures == 1 or failures % 10 == 0:
                    log.warning("could not forward spooled events; retrying", extra={
                        "reason": self.last_error, "retry_in": round(delay, 1),
                        "depth": self._spool.state().depth})
                self._idle.set()
                await asyncio.sleep(delay)
                continue
            await self._spool.mark_drained(records[-1].offset + 1)
            self._idle.set()
            if failures:
                log.info("forwarding spooled events again", extra={"after_failures": failures})
            failures, self.last_error = 0, None
            metrics.spool_drained.inc(len(records))
            for fact in facts:
                self._record(fact)
            drained = not self._spool.pending
            if drained or loop.time() - pruned_at > PRUNE_INTERVAL:
                if drained:
                    log.info("spool drained: publishing directly again")
                await self._spool.prune()
                pruned_at = loop.time()

    async def _forward(self, records: Sequence[Record]) -> list[DeliveryFact]:
        """Send ``records`` and wait for every ack; dead-letter what Kafka will never
        take (and what no longer decodes). Raises the first retriable
        :class:`BusError` (the whole batch is then sent again: a duplicate at
        worst, never a gap); the delivery facts of the batch otherwise."""
        items = [_Item(record) for record in records]
        async with asyncio.timeout(watchdog_timeout(self._settings)):
            for item in items:
                await self._send(item)
            pending = [item for item in items if item.future is not None]
            results = await asyncio.gather(*(item.future for item in pending if item.future),
                                           return_exceptions=True)
        for item, result in zip(pending, results, strict=True):
            if isinstance(result, RecordRejected):
                item.problem = f"Kafka will not take it: {result}"
            elif isinstance(result, BaseException):
                raise result
        facts: list[DeliveryFact] = []
        for item in items:
            if item.problem is not None:
                await self._dead_letter(item.record, item.problem)
            if item.event is not None and (fact := forwarded_fact(
                    item.event, item.record.timestamp,
                    failed=item.problem and f"dead-lettered: {item.problem}")):
                facts.append(fact)
        return facts

    async def _send(self, item: _Item) -> None:
        try:
            item.event = decode_push(item.record.value)
        except InvalidEvent as exc:
            item.problem = f"undecodable spooled record: {exc}"
            return
        try:
            item.future = await self._producer.send(self._settings.push_topic,
                                                    item.record.value, key=item.event.key)
        except RecordRejected as exc:
            item.problem = f"Kafka will not take it: {exc}"

    async def _dead_letter(self, record: Record, reason: str) -> None:
        letter = DeadLetter(
            stage=STAGE, reason=reason[:1000], topic=record.topic, partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", errors="replace") if record.key else None,
            payload=record.value[:DEAD_LETTER_PAYLOAD_LIMIT].decode("utf-8", errors="replace"))
        try:
            future = await self._producer.send(self._settings.dead_letter_topic,
                                               encode(letter),
                                               key=(letter.key or letter.id).encode())
            await future
        except RecordRejected as exc:  # the dead-letter topic is missing: nowhere to go
            log.error("spooled event dropped: not even a dead letter was taken", extra={
                "reason": reason, "error": str(exc), "payload": letter.payload[:2000]})
            return
        metrics.dead_lettered.labels(STAGE).inc()
        log.warning("dead-lettered a spooled event", extra={
            "stage": STAGE, "reason": reason, "offset": record.offset})

    def _record(self, fact: DeliveryFact) -> None:
        if self._on_fact is None:
            return
        try:
            self._on_fact(fact)
        except Exception:  # noqa: BLE001 - visibility must never stop the forwarder
            log.exception("delivery hook failed", extra={"delivery": fact.delivery})
