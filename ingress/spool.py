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
* :class:`ingress.forwarder.Forwarder` is the one reader: it takes
  :meth:`Spool.next_batch`, and calls :meth:`Spool.mark_drained` once Kafka
  acknowledged it, then :meth:`Spool.prune`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ingress.payload import OutgoingEvent, encoded
from pushrelay.infra import metrics
from pushrelay.infra.bus.api import BusError, Record, TopicPartition
from pushrelay.infra.bus.store import LogStore
from pushrelay.infra.settings import IngressSettings

log = logging.getLogger(__name__)

#: The spool's one topic and partition inside its store, and the forwarder's group.
TOPIC = "spool"
PARTITION = 0
TP = TopicPartition(TOPIC, PARTITION)
GROUP = "forwarder"

RefusalReason = Literal["full", "too_old", "unavailable"]


@dataclass(frozen=True, slots=True)
class Spooled:
    """An event was made durable in the spool, not in Kafka, because of ``cause``."""

    cause: str


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


def describe(state: SpoolState, why: str, now: float) -> str:
    """The degraded note of a non-empty spool (``/readyz``), e.g.
    ``spooling: Kafka unavailable (timed out); 120 events, oldest 35 s``."""
    return (f"spooling: {why}; {state.depth} event{'s' if state.depth != 1 else ''}, "
            f"oldest {state.oldest_age(now):.0f} s")


# ---- the spool -------------------------------------------------------------------

class Spool:
    """One store, one partition: ``append`` (durable on return), read, mark drained.

    ``open()`` takes the store's lock and validates it (a corrupt, foreign or
    locked spool raises the store's :class:`BusError`, never empties it);
    ``close()`` is idempotent. Only the :class:`Forwarder` reads and marks.
    """

    def __init__(self, store: LogStore, bounds: SpoolBounds,
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
        #: Why the last append was refused, until one succeeds or records drain.
        self.refused: str | None = None

    @classmethod
    def in_directory(cls, settings: IngressSettings) -> Spool:
        """The spool in ``settings.spool_dir`` (which must be set)."""
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

    def degraded(self, why: str) -> str | None:
        """The degraded note while anything is spooled (``why`` it is), else None."""
        if not self._open or not self.pending:
            return None
        return describe(self.state(), why, self._clock())

    async def append(self, event: OutgoingEvent, cause: str | None = None) -> None:
        """Make ``event`` durable in the spool (fsync'd on return), or raise
        :class:`SpoolRefused` having written nothing."""
        if not self._open:
            raise SpoolRefused("unavailable", "the spool is not open")
        value = encoded(event)
        refused = self._bounds.refusal(self.state(), len(value), self._clock())
        if refused is not None:
            raise self._refuse(refused)
        self._appending += 1
        try:
            await self._store.append([(TOPIC, PARTITION, event.key, value)])
        except BusError as exc:
            # Concurrent appends all passed the check above: the store's bound is "full".
            full = self.state().stored_bytes + len(value) > self._bounds.max_bytes
            raise self._refuse(SpoolRefused("full" if full else "unavailable",
                                            str(exc) or type(exc).__name__)) from exc
        finally:
            self._appending -= 1
        self.refused = None
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
        self.refused = None  # room, or a younger oldest event: worth trying again
        await self._find_oldest()
        self.export_metrics()

    async def prune(self) -> int:
        """Delete drained records; how many."""
        removed = await self._store.prune(TOPIC, before_time=None, consumed_by=[GROUP])
        self.export_metrics()
        return removed

    # ---- internals ---------------------------------------------------------------------
    def _refuse(self, refused: SpoolRefused) -> SpoolRefused:
        metrics.spool_refused.labels(refused.reason).inc()
        self.refused = str(refused)
        return refused

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
