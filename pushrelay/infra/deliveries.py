"""Delivery visibility on the bus: facts onto the deliveries topic, and read back.

Every stage appends facts (:class:`pushrelay.core.deliveries.DeliveryFact`)
about a delivery to the compacted ``deliveries`` topic (an ordinary *accepted*
is the push event itself, on the push-events topic);
:func:`read_deliveries` reads both and folds them into one row per delivery.
The record lives on the bus, so it survives restarts and is the same whichever
replica handled the delivery.

Recording never slows or fails the request path: :class:`DeliveryLog` queues
facts and a background task produces them; if the queue is full the fact is
dropped and counted (the push itself is already durable). A stage that sends a
batch of its own can :meth:`DeliveryLog.publish` the batch's facts alongside
instead, so they leave in the same produce request.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Iterable, Sequence

from pushrelay.core.deliveries import (
    Delivery,
    DeliveryFact,
    accepted_from_event,
    fold,
    parse_fact,
)
from pushrelay.core.events import InvalidEvent, decode_push
from pushrelay.infra.bus.api import Bus, Producer
from pushrelay.infra.settings import CommonSettings

log = logging.getLogger(__name__)

#: The producer to record with, or None while there is none (not connected yet).
ProducerSource = Callable[[], Producer | None]


class DeliveryLog:
    """Non-blocking recorder of delivery facts onto the deliveries topic.

    ``producer`` is asked for the producer before every fact (the ingress's is
    connected in the background); facts wait while it answers None.
    """

    def __init__(self, producer: ProducerSource, settings: CommonSettings,
                 max_queue: int = 10_000) -> None:
        self._producer = producer
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

    async def publish(self, facts: Iterable[DeliveryFact]) -> None:
        """Send ``facts`` now, without waiting for their acks (best effort: a
        failure is counted and logged, never raised).

        The sends are only enqueued on the producer (no suspension while it is
        connected), so a caller that sends its own records in the same turn of
        the event loop has them all leave in one produce request: the router's
        facts used to be a second request per batch (a send and a wakeup, ~100 µs
        each on a small VM). Without a producer yet, the facts are queued as by
        :meth:`record`.
        """
        producer = self._producer()
        if producer is None:
            for fact in facts:
                self.record(fact)
        else:
            await self._send(producer, list(facts))

    async def _run(self) -> None:
        while True:
            fact = await self._queue.get()
            try:
                producer = self._producer()
                while producer is None:  # not connected (yet): the fact waits
                    await asyncio.sleep(1.0)
                    producer = self._producer()
                await self._send(producer, [fact])
            finally:
                self._queue.task_done()

    async def _send(self, producer: Producer, facts: Sequence[DeliveryFact]) -> None:
        """Enqueue ``facts`` (not waiting for acks); each failure is counted."""
        try:
            partitions = await producer.partitions(self._topic)
        except Exception as exc:  # noqa: BLE001 - visibility is best effort
            for _ in facts:
                self._lost(exc)
            return
        for fact in facts:
            try:
                key = fact.key
                # Each fact has a key of its own: spare the producer's (memoizing)
                # partitioner; any fixed key → partition map keeps compaction right.
                future = await producer.send(
                    self._topic, fact.model_dump_json(by_alias=True).encode(), key=key,
                    partition=partitions[zlib.crc32(key) % len(partitions)])
                future.add_done_callback(self._acked)
            except Exception as exc:  # noqa: BLE001 - visibility is best effort
                self._lost(exc)

    def _acked(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and (exc := future.exception()) is not None:
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        self.dropped += 1
        log.warning("could not record delivery fact: %s", exc)


async def read_facts(bus: Bus, settings: CommonSettings,
                     max_wait: float = 10.0) -> list[DeliveryFact]:
    """Every fact on the deliveries topic, and the *accepted* fact of every push
    event still on the push-events topic (nothing committed; unreadable records
    skipped: a foreign producer's event is no delivery of ours)."""
    records, events = await asyncio.gather(
        bus.read_topic(settings.deliveries_topic, max_wait),
        bus.read_topic(settings.push_topic, max_wait))
    facts = [fact for record in records if (fact := parse_fact(record.value)) is not None]
    for record in events:
        try:
            fact = accepted_from_event(decode_push(record.value))
        except InvalidEvent:
            continue
        if fact is not None:
            facts.append(fact)
    return facts


async def read_deliveries(
    bus: Bus, settings: CommonSettings, *, receiver: str | None = None,
    namespace: str | None = None, limit: int = 20,
) -> list[Delivery]:
    """The newest ``limit`` deliveries (optionally of one receiver or project), folded."""
    rows = fold(await read_facts(bus, settings))
    if receiver is not None:
        rows = [r for r in rows if r.receiver == receiver]
    if namespace is not None:
        rows = [r for r in rows if (r.project or "") == namespace]
    return rows[:limit]
