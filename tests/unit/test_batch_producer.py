"""BatchProducer's bookkeeping against a fake producer (the real one: integration tests)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, ProducerClosed

from pushrelay.batch_producer import BatchProducer
from pushrelay.bus import KeyPartitioner


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: None) -> object | None:
        if self.records and len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.batches: list[tuple[int, FakeBatch, asyncio.Future[None]]] = []
        self.singles: list[tuple[bytes | None, bytes, asyncio.Future[None]]] = []
        self.fail_submit: Exception | None = None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        if self.fail_submit is not None:
            raise self.fail_submit
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.batches.append((partition, batch, acked))
        return acked

    async def send(self, topic: str, value: bytes, key: bytes | None) -> asyncio.Future[None]:
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.singles.append((key, value, acked))
        return acked

    def ack_all(self, error: Exception | None = None) -> None:
        for _, _, acked in self.batches:
            if not acked.done():
                acked.set_exception(error) if error else acked.set_result(None)


async def settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def fake() -> Any:
    producer = FakeProducer(capacity=3)
    batches = BatchProducer(cast(Any, producer), "t", max_batched=100)
    batches.start()
    yield producer, batches
    producer.ack_all()
    await batches.stop()


async def test_one_turn_of_sends_is_one_batch_per_partition(fake: Any) -> None:
    producer, batches = fake
    keys = [f"k{i % 2}".encode() for i in range(6)]
    futures = [batches.send(k, b"v%d" % i) for i, k in enumerate(keys)]
    await settled()
    partitioner = KeyPartitioner()
    expected = {partitioner(k, [0, 1, 2], [0, 1, 2]) for k in keys}
    assert {p for p, _, _ in producer.batches} == expected
    # capacity 3: the three messages of each key fill one batch each
    assert sorted(len(b.records) for _, b, _ in producer.batches) == [3, 3]
    assert not any(f.done() for f in futures)  # nothing is acknowledged before the broker
    producer.ack_all()
    await settled()
    assert all(f.done() and f.exception() is None for f in futures)


async def test_full_batches_spill_into_new_ones_in_order(fake: Any) -> None:
    producer, batches = fake
    futures = [batches.send(b"same", b"v%d" % i) for i in range(7)]
    await settled()
    values = [v for _, b, _ in producer.batches for _, v in b.records]
    assert values == [b"v%d" % i for i in range(7)]
    assert [len(b.records) for _, b, _ in producer.batches] == [3, 3, 1]
    producer.ack_all()
    await settled()
    assert all(f.done() for f in futures)


async def test_a_failed_batch_fails_its_messages_only(fake: Any) -> None:
    producer, batches = fake
    first = [batches.send(b"same", b"a%d" % i) for i in range(3)]
    second = [batches.send(b"same", b"b%d" % i) for i in range(2)]
    await settled()
    (_, _, acked1), (_, _, acked2) = producer.batches
    acked1.set_exception(KafkaTimeoutError())
    acked2.set_result(None)
    await settled()
    assert all(isinstance(f.exception(), KafkaTimeoutError) for f in first)
    assert all(f.exception() is None for f in second)


async def test_submit_errors_reach_every_sender(fake: Any) -> None:
    producer, batches = fake
    producer.fail_submit = KafkaTimeoutError()
    futures = [batches.send(b"k", b"v"), batches.send(b"j", b"w")]
    await settled()
    assert all(isinstance(f.exception(), KafkaTimeoutError) for f in futures)


async def test_oversized_messages_go_alone(fake: Any) -> None:
    producer, batches = fake
    small = batches.send(b"k", b"small")
    big = batches.send(b"k", b"x" * 101)
    await settled()
    assert [v for k, v, _ in producer.singles] == [b"x" * 101]
    assert all(v != b"x" * 101 for _, b, _ in producer.batches for _, v in b.records)
    producer.singles[0][2].set_exception(MessageSizeTooLargeError())
    producer.ack_all()
    await settled()
    assert small.exception() is None and isinstance(big.exception(), MessageSizeTooLargeError)


async def test_stop_hands_over_what_is_queued_then_refuses() -> None:
    producer = FakeProducer()
    batches = BatchProducer(cast(Any, producer), "t")
    batches.start()
    queued = batches.send(b"k", b"v")
    await batches.stop()
    assert [v for _, b, _ in producer.batches for _, v in b.records] == [b"v"]
    assert not queued.done()  # handed to the producer, whose stop() flushes it
    late = batches.send(b"k", b"late")
    assert isinstance(late.exception(), ProducerClosed)
    await batches.stop()  # idempotent
