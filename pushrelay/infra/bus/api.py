"""The bus interface: what the services need from a durable, partitioned log.

Two implementations (docs/bus.md): :mod:`pushrelay.infra.bus.kafka` (a Kafka
cluster, through aiokafka) and :mod:`pushrelay.infra.bus.embedded` (a local
SQLite log, for one all-in-one process without Kafka). Services are written
against these protocols only and never ask which one they got; the composition
root (:mod:`pushrelay.cli.services`) opens the bus ``PUSHRELAY_BUS`` names and
hands the same object to every service of the process.

The guarantees both implementations keep (tested by
``tests/integration/test_bus_contract.py`` on both):

* **Durable on ack.** The future a :meth:`Producer.send` returns resolves only
  when the record is durable (Kafka: ``acks=all``; embedded: the transaction is
  fsync'd), and raises :class:`BusError` otherwise. A record whose send failed
  may still have been written (a duplicate at worst, never a loss).
* **Per-key order.** Records with the same key land in the same partition, in
  send order, and are consumed in that order.
* **Committed offsets.** A consumer group resumes from its last commit; nothing
  is committed implicitly. ``commit({tp: n})`` means "every record below ``n``
  is done" (Kafka's convention: the next offset to read).
* **Errors carry their retry policy.** Every failure the bus understands is a
  :class:`BusError` whose :attr:`BusError.retriable` says whether trying again
  can help; anything else escaping a bus call is a bug and is left to crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

BusKind = Literal["kafka", "embedded"]


class TopicPartition(NamedTuple):
    """One partition of a topic (equal to, and hashing like, aiokafka's)."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    #: When the bus stored the record, epoch seconds.
    timestamp: float


# ---- errors ------------------------------------------------------------------

class BusError(Exception):
    """A bus operation failed in a way we understand.

    ``retriable``: the same call may succeed later (broker down, timeout, disk
    full); False when it never will (record too large, unknown topic).
    """

    retriable: bool = True


class BusUnavailable(BusError):
    """The bus cannot be reached or cannot write now (Kafka down, disk full)."""


class BusTimeout(BusError):
    """No answer in time; the operation may or may not have taken effect."""


class RecordRejected(BusError):
    """The bus will never take this record (too large, bad topic)."""

    retriable = False


class CommitRefused(BusError):
    """The partitions were handed to another group member; its commits win."""

    retriable = False


class BusCorrupt(BusError):
    """The embedded log's files are damaged or not ours: refuse to start."""

    retriable = False


# ---- the protocols -------------------------------------------------------------

class Rebalance(Protocol):
    """Called by a consumer when its partitions change (always with the consumer's
    own task suspended in :meth:`Consumer.poll`, so no batch is half-handled)."""

    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...
    async def on_assigned(self, partitions: set[TopicPartition]) -> None: ...


class Producer(Protocol):
    """Sends records. ``start()``/``stop()`` are idempotent; ``stop()`` flushes."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[None]:
        """Enqueue a record; the returned future resolves once it is durable.

        Raises (or the future raises) :class:`BusError`. ``partition`` None: by
        key (Kafka's default partitioner, so other producers agree).
        """
        ...

    async def partitions(self, topic: str) -> Sequence[int]:
        """The topic's partition numbers, sorted."""
        ...

    async def probe(self) -> None:
        """Raise :class:`BusError` unless the bus can take records now (readiness)."""
        ...


class Consumer(Protocol):
    """One member of a consumer group on one topic. Idempotent start/stop."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def poll(self, wait: float, max_records: int
                   ) -> Mapping[TopicPartition, Sequence[Record]]:
        """Records after the current position, at most ``max_records``; waits up to
        ``wait`` seconds for the first one (empty mapping: nothing came)."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Durably record, per partition, the next offset to read.

        :class:`CommitRefused` when a partition is no longer ours.
        """
        ...

    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def paused(self) -> set[TopicPartition]: ...


class Bus(Protocol):
    """A durable log with the topics of :func:`pushrelay.infra.bus.topics.topic_configs`.

    One per process, started before and stopped after every service using it.
    """

    kind: BusKind

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def ensure_topics(self) -> None:
        """Create our topics if missing (idempotent, safe from several replicas)."""
        ...

    def producer(self, *, client_id: str, linger_ms: int | None = None) -> Producer:
        """A new producer (not started). ``linger_ms`` None: the bus's default."""
        ...

    def consumer(self, topic: str, group: str, *, client_id: str,
                 listener: Rebalance | None = None) -> Consumer:
        """A new group member on ``topic`` (not started), from the group's commit,
        else the earliest record."""
        ...

    async def read_topic(self, topic: str, max_wait: float = 10.0) -> list[Record]:
        """Every record of ``topic`` now, in partition then offset order, with no
        group and nothing committed (``pushrelay deliveries``)."""
        ...
