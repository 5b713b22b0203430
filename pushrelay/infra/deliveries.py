"""Delivery visibility on Kafka: facts onto the deliveries topic, and read back.

Every stage appends facts (:class:`pushrelay.core.deliveries.DeliveryFact`)
about a delivery to the compacted ``deliveries`` topic;
:func:`read_deliveries` reads them and folds them into one row per delivery.
The record lives in Kafka, so it survives restarts and is the same whichever
replica handled the delivery.

Recording never slows or fails the request path: :class:`DeliveryLog` queues
facts and a background task produces them; if the queue is full the fact is
dropped and counted (the push itself is already durable).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pushrelay.core.deliveries import Delivery, DeliveryFact, fold, parse_fact
from pushrelay.infra.bus import connection_options
from pushrelay.infra.settings import CommonSettings

log = logging.getLogger(__name__)

ProducerSource = Callable[[], AIOKafkaProducer | None]


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
