"""Lingering across partitions: hold sends for a window, then send them together.

aiokafka lingers per partition: a partition's batch is sent once *its own*
linger has run out, so records spread by key over six partitions at 200/s
(~33 per partition per second) almost never share a request, whatever the
linger — yet each one waits for it. :class:`Gather` holds every send of one
producer for ``window`` seconds from the first, then hands them all to the
client in one loop turn with the client's own linger at 0: every partition's
batch is ready at once and leaves in one produce request per broker (Java's
producer behaves this way on its own: a broker that has one ready batch
takes every partition's).

The window is a ceiling, not a toll: like Kafka's ``batch.size`` beside
``linger.ms``, a window that holds ``max_records`` flushes at once. Without
the cap, a client that keeps N requests open could never get more than N per
window through a producer that waits for each ack (measured: wrk with 32
connections on the ingress, 3,700 req/s with a 5 ms window, 8,000 with a cap
of 16, CPU-bound).

Order is kept: records are handed on in the order they were held, and one
flush finishes handing on before the next starts (per-key order, as the
partitioner then sees it). A record the client refuses resolves its future
with the error; nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pushrelay.infra.bus.futures import follow

#: Hands one record to the client; the future resolves once it is durable.
SendNow = Callable[[str, bytes, "bytes | None", "int | None"], Awaitable[asyncio.Future[None]]]


@dataclass(frozen=True)
class _Held:
    topic: str
    value: bytes
    key: bytes | None
    partition: int | None
    future: asyncio.Future[None]


class Gather:
    """Holds sends for ``window`` seconds (from the first held one), or until
    ``max_records`` are held (0: no cap), then flushes them through ``send_now``
    in one go. :meth:`close` flushes what is held and
    waits for every flush; it is idempotent, and a closed Gather holds nothing
    (the caller sends directly)."""

    def __init__(self, window: float, send_now: SendNow, max_records: int = 0) -> None:
        if window <= 0:
            raise ValueError("a Gather needs a positive window")
        if max_records < 0:
            raise ValueError("max_records must be 0 (no cap) or positive")
        self._window = window
        self._max = max_records
        self._send_now = send_now
        self._held: list[_Held] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._order = asyncio.Lock()  # one flush hands on at a time (FIFO)
        self.closed = False

    def hold(self, topic: str, value: bytes, key: bytes | None = None,
             partition: int | None = None) -> asyncio.Future[None]:
        assert not self.closed, "hold() after close()"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._held.append(_Held(topic, value, key, partition, future))
        if self._max and len(self._held) >= self._max:
            if self._timer is not None:
                self._timer.cancel()
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window, self._flush)
        return future

    def _flush(self) -> None:
        self._timer = None
        held, self._held = self._held, []
        if held:
            task = asyncio.create_task(self._hand_on(held), name="bus:linger-flush")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _hand_on(self, held: list[_Held]) -> None:
        async with self._order:
            for record in held:
                try:
                    sent = await self._send_now(record.topic, record.value, record.key,
                                                record.partition)
                except Exception as exc:  # noqa: BLE001 - the caller's future carries it
                    if not record.future.done():
                        record.future.set_exception(exc)
                    continue
                follow(sent, record.future)

    async def close(self) -> None:
        """Flush what is held now and wait until every flush has handed its
        records on (their acks are the client's to wait for)."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
