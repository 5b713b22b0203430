"""Messages produced to Kafka as one batch per partition, not one ``send`` each.

aiokafka's ``send()`` runs ~20 µs of Python per message (metadata check,
partitioner, accumulator, a future), and under load every service produces
many messages per event-loop turn: the ingress one per accepted push plus a
delivery fact, the router one per matched Warehouse. :class:`BatchProducer`
collects what is sent while its flusher is busy (at least everything sent in
one loop turn), appends it to one ``BatchBuilder`` per partition (aiokafka's
C record builder) and hands each to ``send_batch``. The broker's
acknowledgement of a batch resolves the future of every message in it, so the
guarantee is exactly ``send()``'s: same producer (``acks=all``, idempotent),
same partition for the same key (Kafka's default partitioner, see
:class:`pushrelay.bus.KeyPartitioner`).

A message over ``max_batched`` bytes goes through ``send()`` on its own, so
one oversized message can never fail a batch of others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed

from pushrelay.bus import KeyPartitioner

log = logging.getLogger(__name__)

Partitioner = Callable[[bytes | None, list[int], list[int]], int]
_Item = tuple[bytes | None, bytes, "asyncio.Future[None]"]


class BatchProducer:
    def __init__(self, producer: AIOKafkaProducer, topic: str, *,
                 partitioner: Partitioner | None = None, max_batched: int = 64 * 1024) -> None:
        self._producer = producer
        self._topic = topic
        self._partitioner = partitioner or KeyPartitioner()
        self._max_batched = max_batched
        self._pending: list[_Item] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._singles: set[asyncio.Task[None]] = set()
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"batch-producer:{self._topic}")

    async def stop(self) -> None:
        """Hand everything queued to the producer, then stop. Idempotent.

        The caller bounds the wait (cancelling it fails what is still queued);
        the producer's own ``stop()`` then flushes what it holds.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.shield(task)
        finally:
            task.cancel()
            await asyncio.gather(task, *self._singles, return_exceptions=True)
            _fail([f for _, _, f in self._pending], ProducerClosed())
            self._pending = []

    def send(self, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        """Queue one message; the future is done when the broker acknowledged it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.set_exception(ProducerClosed())
        elif len(value) > self._max_batched:
            task = asyncio.create_task(self._send_single(key, value, future))
            self._singles.add(task)
            task.add_done_callback(self._singles.discard)
        else:
            self._pending.append((key, value, future))
            self._wake.set()
        return future

    async def _send_single(self, key: bytes | None, value: bytes,
                           future: asyncio.Future[None]) -> None:
        try:
            acked = await self._producer.send(self._topic, value, key=key)
        except Exception as exc:  # noqa: BLE001 - the sender sees it through its future
            _fail([future], exc)
            return
        acked.add_done_callback(lambda done: _settle(done, [future]))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, []
            if pending:
                await self._flush(pending)
            if self._closing and not self._pending:
                return

    async def _flush(self, pending: list[_Item]) -> None:
        try:
            partitions = sorted(await self._producer.partitions_for(self._topic))
            groups: dict[int, list[_Item]] = {}
            for item in pending:
                partition = self._partitioner(item[0], partitions, partitions)
                groups.setdefault(partition, []).append(item)
            for partition, items in groups.items():
                await self._send_partition(partition, items)
        except asyncio.CancelledError:
            _fail([f for _, _, f in pending], asyncio.CancelledError())
            raise
        except Exception as exc:  # noqa: BLE001 - every sender sees it through its future
            _fail([f for _, _, f in pending], exc)

    async def _send_partition(self, partition: int, items: list[_Item]) -> None:
        batch = self._producer.create_batch()
        members: list[asyncio.Future[None]] = []
        for key, value, future in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                await self._submit(batch, partition, members)
                batch, members = self._producer.create_batch(), []
                batch.append(key=key, value=value, timestamp=None)  # fits an empty batch
            members.append(future)
        await self._submit(batch, partition, members)

    async def _submit(self, batch: Any, partition: int,
                      members: list[asyncio.Future[None]]) -> None:
        if not members:
            return
        try:
            acked = await self._producer.send_batch(batch, self._topic, partition=partition)
        except Exception as exc:  # noqa: BLE001 - the senders see it through their futures
            _fail(members, exc)
            return
        acked.add_done_callback(lambda done: _settle(done, members))


def _settle(done: asyncio.Future[Any], members: list[asyncio.Future[None]]) -> None:
    error = asyncio.CancelledError() if done.cancelled() else done.exception()
    if error is not None:
        _fail(members, error)
        return
    for future in members:
        if not future.done():
            future.set_result(None)


def _fail(futures: list[asyncio.Future[None]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
