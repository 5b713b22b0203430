"""Producing and reading test records through the bus interface (any bus).

Tests written against :class:`pushrelay.infra.bus.api.Bus` run on both buses;
Kafka-only checks (group offsets through the admin client, the uvloop guard,
the partitioner) stay in their own helpers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from pushrelay.infra.bus import opened_bus
from pushrelay.infra.bus.api import Bus, Record
from pushrelay.infra.settings import CommonSettings


@asynccontextmanager
async def bus_for(settings: CommonSettings, bus: Bus | None = None) -> AsyncIterator[Bus]:
    """``bus`` as it is, or the settings' bus, started for the block."""
    if bus is not None:
        yield bus
        return
    async with opened_bus(settings) as opened:
        yield opened


async def send_all(bus: Bus, topic: str, records: Iterable[tuple[bytes | None, bytes]],
                   *, linger_ms: int = 5) -> None:
    """Send ``(key, value)`` pairs with a producer of ``bus`` and wait until all are
    durable (topics ensured first)."""
    await bus.ensure_topics()
    producer = bus.producer(client_id="pushrelay-test", linger_ms=linger_ms)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_records(bus: Bus, topic: str, count: int, within: float = 30.0,
                       ) -> list[Record]:
    """The records of ``topic`` once it holds at least ``count`` (in partition then
    offset order); ``TimeoutError`` if it does not within ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            records = await bus.read_topic(topic, max_wait=within)
            if len(records) >= count:
                return records
            await asyncio.sleep(0.2)  # polling the topic's contents, not a synchronization
