"""The embedded bus: :class:`api.Bus <pushrelay.infra.bus.api.Bus>` on one local
:class:`~pushrelay.infra.bus.store.LogStore`, for one all-in-one process without
Kafka (docs/bus.md, "The embedded bus").

* The topics are Kafka's names (:func:`topic_configs`), each with **one
  partition** (0): the process is the only producer and consumer, so more
  partitions would buy no parallelism, and per-key order then holds trivially.
* A send is queued on the store at once (send order is offset order) and its
  future resolves after the grouped, fsync'd transaction.
* A consumer is the only member of its group in the process; it owns the
  topic's partition from ``start()`` (``on_assigned``) to ``stop()``
  (``on_revoked``), starts at the group's commit (else the oldest record), and
  its ``poll`` sleeps on the store's append wake-up, never on a timer.
* Retention, by a task the bus owns: push and refresh records once every group
  that consumes the topic committed past them, every topic by its Kafka
  retention time.
* A bus started on a directory another process owns only reads
  (``read_topic``: ``pushrelay deliveries`` beside a running all-in-one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pushrelay.infra import metrics
from pushrelay.infra.bus.api import (
    BusError,
    BusKind,
    BusUnavailable,
    CommitRefused,
    Rebalance,
    Record,
    RecordRejected,
    TopicPartition,
)
from pushrelay.infra.bus.futures import follow
from pushrelay.infra.bus.store import DiskFull, LogStore, StoreLocked
from pushrelay.infra.bus.topics import topic_configs
from pushrelay.infra.settings import CommonSettings

log = logging.getLogger(__name__)

#: The one partition of every embedded topic.
PARTITION = 0
#: The largest record a send takes (the Kafka producer's ``max_request_size``).
MAX_RECORD_BYTES = 2 * 1024 * 1024
#: How often retention runs (and the log's gauges are updated), s.
RETENTION_INTERVAL = 10.0
#: Free bytes on the data directory's file system that make a probe after a
#: full disk pass again (the next append then proves it).
PROBE_MIN_FREE = 8 * 1024 * 1024
#: Records per store read in :meth:`EmbeddedBus.read_topic`.
READ_CHUNK = 1000


class GroupTaken(BusError):
    """A second consumer of one group on one topic in this process: the embedded
    bus gives a group one member (there is nobody to share partitions with)."""

    retriable = False


class EmbeddedProducer:
    """:class:`api.Producer` on the bus's store. ``linger_ms`` is accepted and
    unused: the store's group commit batches whatever arrives together."""

    def __init__(self, bus: EmbeddedBus, *, client_id: str) -> None:
        self._bus = bus
        self.client_id = client_id
        self._running = False
        self._pending: set[asyncio.Future[list[int]]] = set()

    async def start(self) -> None:
        self._bus.require_owner()
        self._running = True

    async def stop(self) -> None:
        """Wait for the sends already queued to settle (their futures say how)."""
        self._running = False
        if self._pending:
            await asyncio.wait(list(self._pending))

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[None]:
        if not self._running:
            raise BusUnavailable(f"producer {self.client_id} is not running")
        self._bus.require_owner()
        self._bus.check_topic(topic)
        if partition not in (None, PARTITION):
            raise RecordRejected(f"{topic} has one partition ({PARTITION}), not {partition}")
        size = len(value) + (len(key) if key else 0)
        if size > MAX_RECORD_BYTES:
            raise RecordRejected(f"record of {size} bytes, more than {MAX_RECORD_BYTES}")
        offsets = self._bus.store.submit([(topic, PARTITION, key, value)])
        self._pending.add(offsets)
        offsets.add_done_callback(self._settled)
        return follow(offsets)

    def _settled(self, offsets: asyncio.Future[list[int]]) -> None:
        self._pending.discard(offsets)
        if not offsets.cancelled() and isinstance(offsets.exception(), BusUnavailable):
            self._bus.retain_soon()  # the log may be full of records consumed meanwhile

    async def partitions(self, topic: str) -> Sequence[int]:
        self._bus.check_topic(topic)
        return [PARTITION]

    async def probe(self) -> None:
        await self._bus.probe()


class EmbeddedConsumer:
    """:class:`api.Consumer`: the one member of ``group`` on ``topic`` in this process."""

    def __init__(self, bus: EmbeddedBus, topic: str, group: str, *, client_id: str,
                 listener: Rebalance | None = None) -> None:
        self._bus = bus
        self.topic, self.group, self.client_id = topic, group, client_id
        self._tp = TopicPartition(topic, PARTITION)
        self._listener = listener
        self._running = self._leaving = False
        self._position = 0
        self._paused = False
        self._unpaused = asyncio.Event()

    async def start(self) -> None:
        """Join: claim the group, position at its commit, ``on_assigned``."""
        if self._running:
            return
        self._bus.require_owner()
        self._bus.check_topic(self.topic)
        self._bus.claim(self)
        self._running = True
        store = self._bus.store
        committed = store.committed(self.group, self._tp)
        self._position = committed if committed is not None else store.start_offset(
            self.topic, PARTITION)
        self._paused = False
        if self._listener is not None:
            await self._listener.on_assigned({self._tp})

    async def stop(self) -> None:
        """Leave: ``on_revoked`` (still the owner then, so the listener may commit
        what it finished, as in a Kafka rebalance), release the group. Nothing is
        committed here. A poll in progress returns by its ``wait`` bound."""
        if not self._running or self._leaving:
            return
        self._leaving = True
        try:
            if self._listener is not None:
                await self._listener.on_revoked({self._tp})
        finally:
            self._running = self._leaving = False
            self._unpaused.set()  # a poll waiting while paused returns
            self._bus.release(self)

    async def poll(self, wait: float, max_records: int
                   ) -> Mapping[TopicPartition, Sequence[Record]]:
        if not self._running:
            raise BusUnavailable(f"consumer {self.client_id} of {self.group} is not running")
        store = self._bus.store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self._running:
            if not self._paused:
                records = await store.read(self.topic, PARTITION, self._position, max_records)
                if records and self._running and not self._paused:
                    self._position = records[-1].offset + 1
                    return {self._tp: records}
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._paused:
                self._unpaused.clear()
                try:
                    await asyncio.wait_for(self._unpaused.wait(), remaining)
                except TimeoutError:
                    break
            elif not await store.wait(self.topic, PARTITION, self._position, remaining):
                break
        return {}

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        theirs = set(offsets) - self.assignment()
        if theirs:
            raise CommitRefused(f"{sorted(theirs)} not assigned to {self.client_id} "
                                f"of {self.group}")
        await self._bus.store.commit(self.group, offsets)

    def assignment(self) -> set[TopicPartition]:
        return {self._tp} if self._running else set()

    def pause(self, *partitions: TopicPartition) -> None:
        if self._tp in partitions and self._running:
            self._paused = True

    def resume(self, *partitions: TopicPartition) -> None:
        if self._tp in partitions and self._paused:
            self._paused = False
            self._unpaused.set()

    def paused(self) -> set[TopicPartition]:
        return {self._tp} if self._paused and self._running else set()


class EmbeddedBus:
    """:class:`api.Bus` on a :class:`LogStore` in ``settings.data_dir``."""

    kind: BusKind = "embedded"

    def __init__(self, settings: CommonSettings, *,
                 retention_interval: float = RETENTION_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        if not settings.data_dir:
            raise ValueError("the embedded bus needs PUSHRELAY_DATA_DIR")
        self.settings = settings
        self._clock = clock
        #: The open log (replaced at each start; read-only when another process owns it).
        self.store = self._new_store()
        #: Why this bus only reads (another process owns the directory), else None.
        self.owned_elsewhere: StoreLocked | None = None
        self._started = False
        self._retention_interval = retention_interval
        self._topics = topic_configs(settings)
        #: Consumed by their groups: retention follows the commits.
        self._consumed = {settings.push_topic, settings.refresh_topic}
        self._members: dict[tuple[str, str], EmbeddedConsumer] = {}
        self._retention: asyncio.Task[None] | None = None
        self._stopping = False
        #: Set to run a retention pass now (stop() sets it too).
        self._wake = asyncio.Event()

    # ---- lifecycle -----------------------------------------------------------

    def _new_store(self, *, readonly: bool = False) -> LogStore:
        s = self.settings
        assert s.data_dir is not None
        return LogStore(s.data_dir, max_bytes=s.data_max_bytes, clock=self._clock,
                        readonly=readonly)

    async def start(self) -> None:
        """Open the store and start retention. Raises what the store's open does
        (:class:`BusCorrupt`, :class:`~pushrelay.infra.bus.store.StoreUnusable`,
        ...), except when another process owns the directory: then the bus opens
        it read-only (``read_topic`` works: ``pushrelay deliveries`` beside a
        running all-in-one) and producers, consumers and :meth:`probe` raise
        that :class:`~pushrelay.infra.bus.store.StoreLocked`. Idempotent."""
        if self._started:
            return
        store = self._new_store()
        try:
            await store.open()
        except StoreLocked as locked:
            store = self._new_store(readonly=True)
            await store.open()
            self.owned_elsewhere = locked
            log.info("embedded log owned by another process: opened read-only",
                     extra={"reason": str(locked)})
        else:
            self.owned_elsewhere = None
            self._stopping = False
            self._retention = asyncio.create_task(self._retain(),
                                                  name="embedded-bus-retention")
        self.store = store
        self._started = True

    async def stop(self) -> None:
        """Stop retention, then close the store (after the appends queued). Idempotent."""
        if not self._started:
            return
        self._started = False
        self._stopping = True
        self._wake.set()
        task, self._retention = self._retention, None
        if task is not None:
            await task
        await self.store.close()

    def require_owner(self) -> None:
        """Raise :class:`StoreLocked` when this bus only reads another process's log."""
        if self.owned_elsewhere is not None:
            raise self.owned_elsewhere

    async def ensure_topics(self) -> None:
        """Nothing to create: a topic exists from its first record."""

    async def probe(self) -> None:
        """:class:`BusUnavailable` when the store is closed or its last write
        failed; after a full disk, until :data:`PROBE_MIN_FREE` bytes are free
        again (so readiness can come back before the next write)."""
        store = self.store
        if not store.is_open:
            raise BusUnavailable(f"{store.path}: the embedded log is not open")
        self.require_owner()
        error = store.last_write_error
        if error is None:
            return
        if isinstance(error, DiskFull) and await store.free_bytes() >= PROBE_MIN_FREE:
            return
        raise error

    # ---- clients -------------------------------------------------------------

    def producer(self, *, client_id: str, linger_ms: int | None = None) -> EmbeddedProducer:
        return EmbeddedProducer(self, client_id=client_id)

    def consumer(self, topic: str, group: str, *, client_id: str,
                 listener: Rebalance | None = None) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, topic, group, client_id=client_id, listener=listener)

    def check_topic(self, topic: str) -> None:
        if topic not in self._topics:
            raise RecordRejected(f"unknown topic {topic!r} (the embedded bus carries "
                                 f"{', '.join(sorted(self._topics))})")

    def claim(self, member: EmbeddedConsumer) -> None:
        holder = self._members.setdefault((member.group, member.topic), member)
        if holder is not member:
            raise GroupTaken(f"group {member.group} already has a consumer on {member.topic} "
                             f"({holder.client_id}); the embedded bus gives a group one member")

    def release(self, member: EmbeddedConsumer) -> None:
        if self._members.get((member.group, member.topic)) is member:
            del self._members[(member.group, member.topic)]

    async def read_topic(self, topic: str, max_wait: float = 10.0) -> list[Record]:
        """Every record of ``topic`` stored now, in offset order (one partition)."""
        self.check_topic(topic)
        end = self.store.end_offset(topic, PARTITION)
        records: list[Record] = []
        offset = self.store.start_offset(topic, PARTITION)
        while offset < end:
            chunk = await self.store.read(topic, PARTITION, offset, min(READ_CHUNK, end - offset))
            if not chunk:
                break
            records += chunk
            offset = chunk[-1].offset + 1
        return records

    # ---- retention -----------------------------------------------------------

    @property
    def retention_running(self) -> bool:
        return self._retention is not None and not self._retention.done()

    def consumers_of(self, topic: str) -> list[str]:
        """The groups whose commits hold ``topic``'s records: every group that
        ever committed on it, and every group with a member now."""
        live = {group for group, t in self._members if t == topic}
        return sorted(self.store.groups(topic) | live)

    def backlog(self, topic: str) -> int:
        """Records of ``topic`` the slowest of :meth:`consumers_of` has not committed
        (every stored record when no group consumes it yet)."""
        store = self.store
        end = store.end_offset(topic, PARTITION)
        commits = [store.committed(group, TopicPartition(topic, PARTITION))
                   for group in self.consumers_of(topic)]
        done = min((c or 0 for c in commits), default=store.start_offset(topic, PARTITION))
        return max(0, end - max(done, store.start_offset(topic, PARTITION)))

    async def prune(self) -> dict[str, int]:
        """One retention pass; records deleted per topic. Updates the gauges."""
        now = self._clock()
        deleted: dict[str, int] = {}
        for topic, config in self._topics.items():
            before = now - _retention_seconds(config)
            groups = self.consumers_of(topic) if topic in self._consumed else []
            deleted[topic] = await self.store.prune(topic, before_time=before,
                                                    consumed_by=groups)
            metrics.bus_pruned.labels(topic).inc(deleted[topic])
            metrics.bus_log_records.labels(topic).set(self.store.stats(topic).records)
            if topic in self._consumed:
                metrics.bus_backlog.labels(topic).set(self.backlog(topic))
        metrics.bus_log_bytes.set(self.store.total_bytes())
        return deleted

    def retain_soon(self) -> None:
        """Run a retention pass now rather than at the next interval."""
        self._wake.set()

    async def _retain(self) -> None:
        """Retention passes every interval (or when asked) until stop()."""
        while not self._stopping:
            self._wake.clear()
            try:
                deleted = await self.prune()
            except BusError as err:  # a full disk, say: the next pass tries again
                log.warning("embedded log retention failed: %s", err)
            else:
                if any(deleted.values()):
                    log.debug("embedded log retention", extra={"deleted": deleted})
            try:
                await asyncio.wait_for(self._wake.wait(), self._retention_interval)
            except TimeoutError:
                pass


def _retention_seconds(config: Mapping[str, Any]) -> float:
    return int(config["retention.ms"]) / 1000
