"""The spool on a real LogStore (SQLite in tmp_path), the publish path over it, and
the forwarder's batch logic with a stand-in producer (the integration tests run it
against Kafka: tests/integration/test_spool.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from ingress.durable import DurablePublisher
from ingress.forwarder import Forwarder
from ingress.publisher import PublishError
from ingress.spool import TOPIC, Spool, SpoolBounds, Spooled, SpoolRefused
from pushrelay.core.deliveries import DeliveryFact
from pushrelay.core.events import PushEvent, decode_dead_letter, decode_push
from pushrelay.core.normalize import repo_urls
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.bus.api import BusCorrupt, BusUnavailable, RecordRejected
from pushrelay.infra.bus.store import LogStore, StoreLocked
from pushrelay.infra.settings import IngressSettings

MiB = 1024 * 1024
SETTINGS = IngressSettings(topic_prefix="t.", spool_dir="unused")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(repo: str = "quay.io/ns/a", n: int = 0, tags: Sequence[str] = ("v1",)) -> PushEvent:
    return PushEvent(repository=repo, repo_urls=repo_urls(repo), tags=list(tags),
                     delivery=f"d{n}", receiver="r")


def spool_at(directory: Path, clock: Clock, max_bytes: int = MiB,
             max_age: float = 60.0) -> Spool:
    store = LogStore(directory, max_bytes=max_bytes, filename="spool.db", clock=clock)
    return Spool(store, SpoolBounds(max_bytes, max_age), clock=clock)


async def until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    """Poll a condition (generous bound: the machine is shared)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - a condition on another task's state
            await asyncio.sleep(0.01)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def spool(tmp_path: Path, clock: Clock) -> AsyncIterator[Spool]:
    s = spool_at(tmp_path / "spool", clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_append_is_pending_until_drained(spool: Spool, clock: Clock) -> None:
    assert not spool.pending and spool.degraded("x") is None
    await spool.append(event(n=1), "timed out")
    clock.now += 35
    await spool.append(event(n=2))
    assert spool.pending and spool.state().depth == 2
    assert spool.degraded("Kafka unavailable (timed out)") == (
        "spooling: Kafka unavailable (timed out); 2 events, oldest 35 s")
    batch = await spool.next_batch(10, wait=0)
    assert [decode_push(r.value).delivery for r in batch] == ["d1", "d2"]
    assert batch[0].key == event().key
    await spool.mark_drained(batch[0].offset + 1)
    assert spool.state().depth == 1 and spool.state().oldest_age(clock.now) == 0
    await spool.mark_drained(batch[1].offset + 1)
    assert not spool.pending and spool.state().oldest is None
    assert await spool.prune() == 2 and spool.state().stored_bytes == 0
    assert await spool.next_batch(10, wait=0) == []


async def test_an_append_in_flight_counts_as_pending(spool: Spool) -> None:
    """Else a later event could overtake it straight into Kafka."""
    appending = asyncio.ensure_future(spool.append(event()))
    await asyncio.sleep(0)  # the append is queued for the store's writer
    assert spool.pending
    await appending
    assert spool.pending


async def test_refused_beyond_size_and_age(tmp_path: Path, clock: Clock) -> None:
    spool = spool_at(tmp_path / "s", clock, max_bytes=MiB, max_age=60)
    await spool.open()
    try:
        big = event(tags=[f"{i:0>250}" for i in range(2500)])  # ~640 KB encoded
        await spool.append(big)
        with pytest.raises(SpoolRefused) as refused:
            await spool.append(big)
        assert refused.value.reason == "full"
        assert spool.state().depth == 1  # nothing refused was written
        assert spool.refused is not None and spool.refused.startswith("spool full: ")
        await spool.append(event())  # a small one still fits
        assert spool.refused is None
        clock.now += 61
        with pytest.raises(SpoolRefused) as refused:
            await spool.append(event())
        assert refused.value.reason == "too_old"
    finally:
        await spool.close()


async def test_reopen_keeps_undrained_events_and_their_age(tmp_path: Path,
                                                           clock: Clock) -> None:
    first = spool_at(tmp_path / "s", clock)
    await first.open()
    for n in range(3):
        await first.append(event(n=n))
    await first.mark_drained(1)
    await first.close()
    clock.now += 10
    again = spool_at(tmp_path / "s", clock)
    await again.open()
    try:
        assert again.pending and again.state().depth == 2
        assert again.state().oldest_age(clock.now) == 10
        batch = await again.next_batch(10, wait=0)
        assert [decode_push(r.value).delivery for r in batch] == ["d1", "d2"]
    finally:
        await again.close()


async def test_a_locked_or_foreign_spool_is_refused_and_kept(tmp_path: Path,
                                                             clock: Clock) -> None:
    held = spool_at(tmp_path / "s", clock)
    await held.open()
    try:
        with pytest.raises(StoreLocked):
            await spool_at(tmp_path / "s", clock).open()
    finally:
        await held.close()
    foreign = tmp_path / "f" / "spool.db"
    foreign.parent.mkdir()
    foreign.write_bytes(b"not a database, but someone's data" * 100)
    with pytest.raises(BusCorrupt, match="spool.db"):
        await spool_at(foreign.parent, clock).open()
    assert foreign.read_bytes().startswith(b"not a database")  # never emptied


# ---- the publish path ---------------------------------------------------------

class Direct:
    def __init__(self) -> None:
        self.connected, self.last_error = True, None
        self.fail: str | None = None
        self.published: list[PushEvent] = []

    async def publish(self, event: PushEvent) -> None:
        if self.fail:
            raise PublishError(self.fail, disconnected=False)
        self.published.append(event)


async def test_publish_path(spool: Spool) -> None:
    direct = Direct()
    path = DurablePublisher(direct, spool)
    assert await path.publish(event(n=1)) is None and len(direct.published) == 1
    direct.fail = "timed out waiting for the bus"
    assert await path.publish(event(n=2)) == Spooled("timed out waiting for the bus")
    direct.fail = None  # Kafka is back, but the spool is not drained: behind it
    assert await path.publish(event(n=3)) == Spooled("timed out waiting for the bus")
    assert len(direct.published) == 1 and spool.state().depth == 2
    await spool.mark_drained(2)
    direct.connected, direct.last_error = False, "probe failed"  # known down: at once
    assert await path.publish(event(n=4)) == Spooled("not connected: probe failed")


async def test_publish_path_without_spool_is_the_direct_publisher() -> None:
    direct = Direct()
    path = DurablePublisher(direct, None)
    assert await path.publish(event()) is None
    direct.fail = "down"
    with pytest.raises(PublishError, match="down"):
        await path.publish(event())


async def test_spool_refusing_is_the_publish_error(tmp_path: Path, clock: Clock) -> None:
    spool = spool_at(tmp_path / "s", clock, max_age=1)
    await spool.open()
    try:
        direct = Direct()
        direct.fail = "timed out"
        path = DurablePublisher(direct, spool)
        await path.publish(event())
        clock.now += 2
        with pytest.raises(PublishError, match="timed out; spool too old"):
            await path.publish(event())
    finally:
        await spool.close()


# ---- the forwarder's batch logic -----------------------------------------------

class Producer:
    """Takes records, refuses ``reject`` values, fails whole sends while ``down``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.down = 0
        self.reject: set[bytes] = set()

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def partitions(self, topic: str) -> Sequence[int]:
        return [0]

    async def probe(self) -> None: ...

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.down:
            self.down -= 1
            future.set_exception(BusUnavailable("broker down"))
        elif value in self.reject:
            future.set_exception(RecordRejected("MessageSizeTooLargeError"))
        else:
            self.sent.append((topic, value, key))
            future.set_result(None)
        return future


async def test_forwarder_drains_in_order_dead_letters_and_retries(spool: Spool) -> None:
    producer, facts = Producer(), list[DeliveryFact]()
    for n in range(4):
        await spool.append(event(n=n))
    await spool._store.append([(TOPIC, 0, b"k", b"{not json")])  # noqa: SLF001 - bit rot
    await spool.append(event(n=5))
    producer.reject.add((await spool.next_batch(10, 0))[2].value)  # d2: never taken
    producer.down = 2  # the first attempt fails
    forwarder = Forwarder(spool, lambda: producer, SETTINGS, facts.append,
                          backoff=Backoff(base=0.01, max_delay=0.02), batch=3)
    await forwarder.start()
    try:
        await until(lambda: not spool.pending)
    finally:
        await forwarder.stop(within=5)
    pushes = [decode_push(v).delivery for t, v, _ in producer.sent if t == SETTINGS.push_topic]
    # The first batch (d0 d1 d2) failed, was re-sent whole; d2 and the garbage went
    # to the dead letters; nothing else was skipped, nothing reordered.
    assert pushes == ["d0", "d1", "d3", "d5"]
    letters = [decode_dead_letter(v) for t, v, _ in producer.sent
               if t == SETTINGS.dead_letter_topic]
    assert [ltr.stage for ltr in letters] == ["ingress-spool", "ingress-spool"]
    assert "Kafka will not take it" in letters[0].reason
    assert "undecodable" in letters[1].reason and letters[1].payload == "{not json"
    by_delivery = {f.delivery: f for f in facts}
    assert by_delivery["d2"].outcome == "failed" and by_delivery["d0"].outcome == "accepted"
    assert all(f.spooled_at is not None for f in facts)
    assert await spool.prune() >= 0 and not spool.pending


async def test_forwarder_waits_for_a_producer(spool: Spool) -> None:
    producer: Producer | None = None
    forwarder = Forwarder(spool, lambda: producer, SETTINGS,
                          backoff=Backoff(base=0.01, max_delay=0.02))
    await spool.append(event())
    await forwarder.start()
    try:
        await until(lambda: forwarder.last_error is not None)
        assert "not connected" in (forwarder.last_error or "") and spool.pending
        producer = Producer()
        await until(lambda: not spool.pending)
    finally:
        await forwarder.stop(within=5)
        await forwarder.stop(within=5)  # idempotent
    assert producer is not None and len(producer.sent) == 1
