"""Delivery visibility: what happened to each webhook delivery (SPEC section 8).

Every stage appends facts about a delivery to the compacted ``deliveries``
topic, keyed ``<delivery>/<stage>[/<warehouse>]`` so each fact survives
compaction on its own: the ingress records *accepted* or *rejected* (with the
reason), the router *matched N* Warehouses, the refresher *refreshed* or
*failed* per Warehouse. :func:`read_deliveries` folds the facts back into one
row per delivery. The record lives in Kafka, so it survives restarts and is the
same whichever replica handled the delivery.

Recording never slows or fails the request path: :class:`DeliveryLog` queues
facts and a background task produces them; if the queue is full the fact is
dropped and counted (the push itself is already durable).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pushrelay.bus import connection_options
from pushrelay.events import now
from pushrelay.settings import CommonSettings

log = logging.getLogger(__name__)

ProducerSource = Callable[[], AIOKafkaProducer | None]
Outcome = Literal["accepted", "rejected", "matched", "refreshed", "dropped", "failed"]
#: What a delivery of a push without tags says (every subscriber is refreshed).
NO_TAGS = "no tags: every subscriber refreshed"
Stage = Literal["ingress", "router", "refresher"]


class DeliveryFact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    schema_: Literal["pushrelay.delivery/v1"] = Field("pushrelay.delivery/v1", alias="schema")
    delivery: str
    stage: Stage
    outcome: Outcome
    at: datetime = Field(default_factory=now)
    receiver: str | None = None
    project: str | None = None
    repository: str | None = None
    tags: list[str] = Field(default_factory=list)
    reason: str | None = None
    warehouses: list[str] = Field(default_factory=list)
    test_notification: bool = False
    #: router: subscriptions in scope on the pushed repository (with ``reason``,
    #: the first one's reason not to qualify, when nothing matched).
    subscriptions: int | None = None

    @property
    def key(self) -> bytes:
        suffix = f"/{self.warehouses[0]}" if self.stage == "refresher" and self.warehouses else ""
        return f"{self.delivery}/{self.stage}{suffix}".encode()


class Delivery(BaseModel):
    """One delivery, folded from its facts."""

    delivery: str
    received_at: datetime | None = None
    receiver: str | None = None
    project: str | None = None
    repository: str | None = None
    tags: list[str] = Field(default_factory=list)
    outcome: str = "unknown"
    reason: str | None = None
    matched: list[str] = Field(default_factory=list)
    refreshed: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    test_notification: bool = False
    subscriptions: int | None = None
    match_reason: str | None = None

    def summary(self) -> str:
        if self.outcome == "rejected":
            return f"rejected: {self.reason}"
        if self.outcome == "failed" and not self.matched:
            return f"failed: {self.reason}"
        if self.failed:
            text = f"failed {len(self.failed)}/{len(self.matched)}: {self.reason or ''}".strip()
        elif self.refreshed:
            text = f"refreshed {len(self.refreshed)}/{len(self.matched)}"
        elif self.outcome in ("matched", "refreshed"):
            text = f"matched {len(self.matched)} warehouses"
            if not self.matched:
                why = self.why_none()
                return f"{text}: {why}" if why else text
        else:
            return self.outcome
        return f"{text} ({NO_TAGS})" if self.no_tags else text

    @property
    def no_tags(self) -> bool:
        """The ingress accepted a push that carried no tags."""
        return self.received_at is not None and not self.tags

    def why_none(self) -> str | None:
        """Why a routed delivery matched no Warehouse (None if the router did not say)."""
        if self.test_notification:
            return ("Quay test notification (its sample tags "
                    f"{', '.join(self.tags) or 'none'} qualify for no subscription)")
        if self.subscriptions is None:
            return None
        if self.subscriptions == 0:
            return "no Warehouse in scope subscribes to this repository"
        hint = f"pushrelay explain {self.repository or 'REPO'} {self.tags[0] if self.tags else ''}"
        if self.project:
            hint += f" --project {self.project}"
        return (f"{self.subscriptions} subscription(s), but no pushed tag qualified "
                f"(first: {self.match_reason or 'not qualified'}); see `{hint.strip()}`")


def fold(facts: Iterable[DeliveryFact]) -> list[Delivery]:
    """Facts, in any order (stages' clocks race by milliseconds) → deliveries, newest first."""
    rows: dict[str, Delivery] = {}
    ingress: dict[str, str] = {}
    routed: set[str] = set()
    for fact in sorted(facts, key=lambda f: f.at):
        row = rows.setdefault(fact.delivery, Delivery(delivery=fact.delivery))
        if fact.stage == "ingress":
            row.received_at = fact.at
            row.receiver, row.project = fact.receiver, fact.project
            row.repository, row.tags = fact.repository, list(fact.tags)
            row.test_notification = fact.test_notification
            ingress[fact.delivery] = fact.outcome
            if fact.outcome != "accepted":
                row.reason = fact.reason
        elif fact.stage == "router":
            routed.add(fact.delivery)
            row.matched = list(fact.warehouses)
            row.subscriptions, row.match_reason = fact.subscriptions, fact.reason
            row.receiver = row.receiver or fact.receiver
            row.project = row.project or fact.project
        elif fact.outcome == "refreshed":
            row.refreshed = sorted(set(row.refreshed) | set(fact.warehouses))
        else:
            row.failed = sorted(set(row.failed) | set(fact.warehouses))
            row.reason = fact.reason
    for delivery, row in rows.items():
        first = ingress.get(delivery, "unknown")
        if first in ("rejected", "failed"):
            row.outcome = first
        elif row.failed:
            row.outcome = "failed"
        elif row.refreshed:
            row.outcome = "refreshed"
        elif delivery in routed:
            row.outcome = "matched"
        else:
            row.outcome = first
    return _newest_first(rows.values())


def _newest_first(rows: Iterable[Delivery]) -> list[Delivery]:
    def when(row: Delivery) -> float:
        return row.received_at.timestamp() if row.received_at else 0.0
    return sorted(rows, key=when, reverse=True)


class DeliveryLog:
    """Non-blocking recorder of delivery facts onto the deliveries topic."""

    def __init__(self, producer: AIOKafkaProducer | ProducerSource, settings: CommonSettings,
                 max_queue: int = 10_000) -> None:
        self._producer: ProducerSource = (
            producer if callable(producer) else (lambda: producer)
        )
        self._topic = settings.deliveries_topic
        self._queue: asyncio.Queue[DeliveryFact] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def record(self, fact: DeliveryFact) -> None:
        try:
            self._queue.put_nowait(fact)
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="delivery-log")

    async def stop(self) -> None:
        """Flush what is queued (bounded by the caller's timeout), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await self._queue.join()
        finally:  # also when the caller's timeout cancels the flush
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            fact = await self._queue.get()
            try:
                producer = self._producer()
                while producer is None:  # not connected (yet): the fact waits
                    await asyncio.sleep(1.0)
                    producer = self._producer()
                key = fact.key
                # Each fact has a key of its own: spare the producer's (memoizing)
                # partitioner; any fixed key → partition map keeps compaction right.
                partitions = sorted(await producer.partitions_for(self._topic))
                partition = partitions[zlib.crc32(key) % len(partitions)]
                await producer.send(self._topic, fact.model_dump_json(by_alias=True).encode(),
                                    key=key, partition=partition)
            except Exception as exc:  # noqa: BLE001 - visibility is best effort
                self.dropped += 1
                log.warning("could not record delivery fact: %s", exc)
            finally:
                self._queue.task_done()


def parse_fact(raw: bytes | None) -> DeliveryFact | None:
    if not raw:
        return None
    try:
        return DeliveryFact.model_validate_json(raw)
    except ValidationError:
        return None


async def read_facts(settings: CommonSettings, max_wait: float = 10.0) -> list[DeliveryFact]:
    """Read the whole deliveries topic (no consumer group, nothing committed)."""
    consumer = AIOKafkaConsumer(
        **connection_options(settings), enable_auto_commit=False,
        auto_offset_reset="earliest", group_id=None,
    )
    await consumer.start()
    facts: list[DeliveryFact] = []
    try:
        partitions = consumer.partitions_for_topic(settings.deliveries_topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            partitions = consumer.partitions_for_topic(settings.deliveries_topic) or set()
        tps = [TopicPartition(settings.deliveries_topic, p) for p in sorted(partitions)]
        if not tps:
            return facts
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if end[tp] > 0}
        async with asyncio.timeout(max_wait):
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        fact = parse_fact(record.value)
                        if fact is not None:
                            facts.append(fact)
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
    finally:
        await consumer.stop()
    return facts


async def read_deliveries(
    settings: CommonSettings, *, receiver: str | None = None,
    namespace: str | None = None, limit: int = 20,
) -> list[Delivery]:
    rows = fold(await read_facts(settings))
    if receiver is not None:
        rows = [r for r in rows if r.receiver == receiver]
    if namespace is not None:
        rows = [r for r in rows if (r.project or "") == namespace]
    return rows[:limit]
