"""EmbeddedBus specifics (real SQLite in tmp_path); the shared contract is in
tests/integration/test_bus_contract.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pushrelay.infra import metrics
from pushrelay.infra.bus.api import (
    BusUnavailable,
    CommitRefused,
    RecordRejected,
    TopicPartition,
)
from pushrelay.infra.bus.embedded import EmbeddedBus, GroupTaken
from pushrelay.infra.bus.store import DiskFull, StoreLocked, StoreUnusable
from pushrelay.infra.settings import Settings

DAY = 24 * 3600.0
LONG = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(bus="embedded", data_dir=str(tmp_path / "data"), topic_prefix="e.",
                    router_group="router", refresher_group="refresher")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def bus(settings: Settings, clock: Clock) -> AsyncIterator[EmbeddedBus]:
    b = EmbeddedBus(settings, clock=clock, retention_interval=3600)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def send(bus: EmbeddedBus, topic: str, *values: bytes, key: bytes = b"k") -> None:
    producer = bus.producer(client_id="p")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v, key=key) for v in values])
    finally:
        await producer.stop()


async def test_poll_is_woken_by_a_send(bus: EmbeddedBus, settings: Settings) -> None:
    consumer = bus.consumer(settings.push_topic, "g", client_id="c")
    await consumer.start()
    try:
        polled = asyncio.create_task(consumer.poll(wait=LONG, max_records=10))
        await send(bus, settings.push_topic, b"a")
        batch = await asyncio.wait_for(polled, LONG)
        assert [r.value for r in batch[TopicPartition(settings.push_topic, 0)]] == [b"a"]
    finally:
        await consumer.stop()


async def test_a_paused_poll_is_woken_by_resume(bus: EmbeddedBus, settings: Settings) -> None:
    consumer = bus.consumer(settings.push_topic, "g", client_id="c")
    await consumer.start()
    tp = TopicPartition(settings.push_topic, 0)
    try:
        consumer.pause(tp)
        await send(bus, settings.push_topic, b"a")
        polled = asyncio.create_task(consumer.poll(wait=LONG, max_records=10))
        await asyncio.sleep(0)
        assert not polled.done()
        consumer.resume(tp)
        assert [r.value for r in (await asyncio.wait_for(polled, LONG))[tp]] == [b"a"]
    finally:
        await consumer.stop()


async def test_one_member_per_group_and_topic(bus: EmbeddedBus, settings: Settings) -> None:
    first = bus.consumer(settings.push_topic, "g", client_id="c1")
    await first.start()
    second = bus.consumer(settings.push_topic, "g", client_id="c2")
    with pytest.raises(GroupTaken, match="c1") as taken:
        await second.start()
    assert not taken.value.retriable
    other = bus.consumer(settings.push_topic, "other", client_id="c3")
    await other.start()  # another group: fine
    await other.stop()
    await first.stop()
    await second.start()  # the group is free again
    with pytest.raises(CommitRefused):
        await first.commit({TopicPartition(settings.push_topic, 0): 0})  # stopped: not ours
    await second.stop()


async def test_listener_sees_the_partition_from_start_to_stop(
        bus: EmbeddedBus, settings: Settings) -> None:
    events: list[tuple[str, set[TopicPartition]]] = []

    class Listener:
        async def on_assigned(self, partitions: set[TopicPartition]) -> None:
            events.append(("assigned", partitions))

        async def on_revoked(self, partitions: set[TopicPartition]) -> None:
            events.append(("revoked", partitions))

    consumer = bus.consumer(settings.refresh_topic, "g", client_id="c", listener=Listener())
    await consumer.start()
    await consumer.start()
    tp = {TopicPartition(settings.refresh_topic, 0)}
    assert consumer.assignment() == tp and events == [("assigned", tp)]
    await consumer.stop()
    await consumer.stop()
    assert consumer.assignment() == set() and events == [("assigned", tp), ("revoked", tp)]


async def test_a_listener_may_commit_in_on_revoked_at_stop(
        bus: EmbeddedBus, settings: Settings) -> None:
    tp = TopicPartition(settings.refresh_topic, 0)
    await send(bus, settings.refresh_topic, b"a", b"b")

    class CommitsOnRevoke:
        async def on_assigned(self, partitions: set[TopicPartition]) -> None:
            pass

        async def on_revoked(self, partitions: set[TopicPartition]) -> None:
            await consumer.commit({tp: 2})

    consumer = bus.consumer(settings.refresh_topic, "g", client_id="c",
                            listener=CommitsOnRevoke())
    await consumer.start()
    assert len((await consumer.poll(wait=LONG, max_records=10))[tp]) == 2
    await consumer.stop()
    assert bus.store.committed("g", tp) == 2


async def test_unknown_topics_and_partitions_are_rejected(
        bus: EmbeddedBus, settings: Settings) -> None:
    producer = bus.producer(client_id="p")
    await producer.start()
    try:
        with pytest.raises(RecordRejected, match="unknown topic"):
            await producer.send("nope", b"v")
        with pytest.raises(RecordRejected, match="one partition"):
            await producer.send(settings.push_topic, b"v", partition=1)
        assert await producer.partitions(settings.push_topic) == [0]
    finally:
        await producer.stop()
    with pytest.raises(RecordRejected):
        await bus.consumer("nope", "g", client_id="c").start()
    with pytest.raises(RecordRejected):
        await bus.read_topic("nope")


async def test_retention_follows_every_consuming_group_and_the_retention_times(
        bus: EmbeddedBus, settings: Settings, clock: Clock) -> None:
    push, letters = settings.push_topic, settings.dead_letter_topic
    await send(bus, push, *[b"%d" % i for i in range(10)])
    await send(bus, letters, b"old")
    assert bus.backlog(push) == 10  # nobody consumes it yet: all of it
    live = bus.consumer(push, "router", client_id="r")
    await live.start()
    try:
        await live.commit({TopicPartition(push, 0): 6})
        assert bus.backlog(push) == 4
        replay = bus.consumer(push, "replay", client_id="x")
        await replay.start()  # a live member that never committed holds everything
        assert (await bus.prune())[push] == 0
        await replay.commit({TopicPartition(push, 0): 4})
        await replay.stop()
        assert (await bus.prune())[push] == 4  # "replay" committed once: still counts
        assert bus.backlog(push) == 6
        assert metrics.REGISTRY.get_sample_value("pushrelay_bus_backlog", {"topic": push}) == 6
    finally:
        await live.stop()
    assert bus.store.stats(push).records == 6
    clock.now += 8 * DAY  # push events: 7 days, consumed or not; dead letters: 30 days
    assert await bus.prune() == {push: 6, settings.refresh_topic: 0, letters: 0,
                                 settings.deliveries_topic: 0}
    clock.now += 23 * DAY
    assert (await bus.prune())[letters] == 1


async def test_the_retention_task_runs_when_asked(bus: EmbeddedBus, settings: Settings) -> None:
    push = settings.push_topic
    await send(bus, push, b"a", b"b")
    consumer = bus.consumer(push, "router", client_id="r")
    await consumer.start()
    await consumer.commit({TopicPartition(push, 0): 2})
    await consumer.stop()
    assert bus.retention_running
    passes: asyncio.Queue[dict[str, int]] = asyncio.Queue()
    real = bus.prune

    async def observed() -> dict[str, int]:
        deleted = await real()
        passes.put_nowait(deleted)
        return deleted

    bus.prune = observed  # type: ignore[method-assign]
    bus.retain_soon()
    async with asyncio.timeout(LONG):
        while (await passes.get())[push] == 0:
            pass
    assert bus.store.stats(push).records == 0


async def test_stop_is_idempotent_and_probe_follows_the_store(
        settings: Settings, clock: Clock) -> None:
    bus = EmbeddedBus(settings, clock=clock)
    with pytest.raises(BusUnavailable, match="not open"):
        await bus.probe()
    await bus.start()
    await bus.start()
    await bus.ensure_topics()
    await bus.probe()
    bus.store.last_write_error = BusUnavailable("an I/O error")
    with pytest.raises(BusUnavailable, match="I/O"):
        await bus.probe()
    bus.store.last_write_error = DiskFull("full")  # tmp_path has room again: ready
    await bus.probe()
    await bus.stop()
    await bus.stop()
    assert not bus.retention_running
    with pytest.raises(BusUnavailable):
        await bus.probe()
    await bus.start()  # and again
    await bus.stop()


async def test_producer_stop_waits_for_queued_sends(bus: EmbeddedBus, settings: Settings) -> None:
    producer = bus.producer(client_id="p")
    await producer.start()
    futures = [await producer.send(settings.push_topic, b"%d" % i) for i in range(50)]
    await producer.stop()
    assert all(f.done() and f.exception() is None for f in futures)
    assert bus.store.end_offset(settings.push_topic, 0) == 50
    with pytest.raises(BusUnavailable):
        await producer.send(settings.push_topic, b"late")


async def test_a_data_dir_that_is_a_file_is_a_clear_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("not a directory")
    bus = EmbeddedBus(Settings(bus="embedded", data_dir=str(path)))
    with pytest.raises(StoreUnusable, match=str(path)) as unusable:
        await bus.start()
    assert not unusable.value.retriable
    await bus.stop()  # never started: nothing to do


async def test_a_second_bus_on_a_running_log_only_reads(bus: EmbeddedBus,
                                                        settings: Settings) -> None:
    await send(bus, settings.deliveries_topic, b"d1", b"d2")
    beside = EmbeddedBus(settings)  # `pushrelay deliveries` next to the all-in-one
    await beside.start()
    try:
        assert [r.value for r in await beside.read_topic(settings.deliveries_topic)] == [
            b"d1", b"d2"]
        assert not beside.retention_running
        for refused in (beside.producer(client_id="p").start(),
                        beside.consumer(settings.push_topic, "g", client_id="c").start(),
                        beside.probe()):
            with pytest.raises(StoreLocked, match="pid"):
                await refused
    finally:
        await beside.stop()
    await bus.probe()  # the owner is untouched
