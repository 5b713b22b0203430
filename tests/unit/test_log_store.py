"""LogStore: the durable log under the embedded bus and the spool (real SQLite in tmp_path)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pushrelay.infra.bus.api import BusCorrupt, BusUnavailable, RecordRejected, TopicPartition
from pushrelay.infra.bus.sqlitelog import APPLICATION_ID, SCHEMA_VERSION
from pushrelay.infra.bus.store import LogStore, StoreLocked, StoreStats

MiB = 1024 * 1024


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[LogStore]:
    s = LogStore(tmp_path / "data", max_bytes=64 * MiB, clock=clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def reopened(s: LogStore, clock: Clock | None = None) -> LogStore:
    await s.close()
    again = LogStore(s.path.parent, max_bytes=s.max_bytes, clock=clock or Clock())
    await again.open()
    return again


async def test_offsets_are_consecutive_per_partition_in_append_order(
        store: LogStore, clock: Clock) -> None:
    assert store.end_offset("t", 0) == 0
    assert await store.append([("t", 0, b"k", b"a"), ("t", 1, None, b"x"),
                               ("t", 0, b"k", b"b")]) == [0, 0, 1]
    clock.now = 1001.0
    assert await store.append([("t", 0, b"k", b"c")]) == [2]
    assert store.end_offset("t", 0) == 3 and store.end_offset("t", 1) == 1
    assert store.partitions("t") == [0, 1]
    records = await store.read("t", 0, 0, 10)
    assert [(r.offset, r.key, r.value, r.timestamp) for r in records] == [
        (0, b"k", b"a", 1000.0), (1, b"k", b"b", 1000.0), (2, b"k", b"c", 1001.0)]
    assert [r.value for r in await store.read("t", 0, 1, 1)] == [b"b"]
    assert await store.read("t", 0, 3, 10) == []
    assert (await store.read("t", 1, 0, 10))[0].key is None


async def test_concurrent_appends_are_grouped_into_few_transactions(store: LogStore) -> None:
    n = 200
    offsets = await asyncio.gather(*(store.append([("t", 0, b"k", b"%d" % i)])
                                     for i in range(n)))
    assert sorted(o for [o] in offsets) == list(range(n))
    assert store.transactions <= n // 20, store.transactions
    # each caller got the offset of its own record
    for i, [offset] in enumerate(offsets):
        assert (await store.read("t", 0, offset, 1))[0].value == b"%d" % i
    one_by_one = store.transactions
    for _ in range(5):
        await store.append([("t", 0, None, b"solo")])
    assert store.transactions == one_by_one + 5


async def test_reopen_keeps_records_offsets_and_commits(store: LogStore, clock: Clock) -> None:
    await store.append([("t", 0, b"k", b"v%d" % i) for i in range(5)])
    await store.commit("g", {TopicPartition("t", 0): 3})
    assert store.committed("g", TopicPartition("t", 0)) == 3
    assert store.committed("other", TopicPartition("t", 0)) is None
    again = await reopened(store)
    try:
        assert again.end_offset("t", 0) == 5
        assert again.committed("g", TopicPartition("t", 0)) == 3
        assert [r.value for r in await again.read("t", 0, 0, 10)] == [
            b"v%d" % i for i in range(5)]
        assert again.stats("t") == StoreStats(records=5, bytes=5 * 3, oldest=1000.0)
        assert await again.append([("t", 0, None, b"more")]) == [5]
    finally:
        await again.close()


async def test_prune_by_commits_and_by_age_keeps_offsets_counting(
        store: LogStore, clock: Clock) -> None:
    for i in range(10):
        clock.now = 1000.0 + i
        await store.append([("t", 0, None, b"%d" % i)])
    tp = TopicPartition("t", 0)
    await store.commit("a", {tp: 6})
    # a group that never committed holds everything
    assert await store.prune("t", before_time=None, consumed_by=["a", "b"]) == 0
    await store.commit("b", {tp: 4})
    assert await store.prune("t", before_time=None, consumed_by=["a", "b"]) == 4
    assert store.stats("t") == StoreStats(records=6, bytes=6, oldest=1004.0)
    assert [r.offset for r in await store.read("t", 0, 0, 2)] == [4, 5]  # pruned: from oldest
    # by age: everything before the first record not older than 1007
    assert await store.prune("t", before_time=1007.0, consumed_by=[]) == 3
    assert store.start_offset("t", 0) == 7 and store.end_offset("t", 0) == 10
    assert await store.prune("t", before_time=2000.0, consumed_by=[]) == 3
    assert store.stats("t") == StoreStats(records=0, bytes=0, oldest=None)
    again = await reopened(store)
    try:
        assert again.end_offset("t", 0) == 10 and again.stats("t").records == 0
        assert await again.append([("t", 0, None, b"next")]) == [10]
        assert again.stats("t").oldest is not None
    finally:
        await again.close()


async def test_stats_per_topic(store: LogStore, clock: Clock) -> None:
    await store.append([("a", 0, b"kk", b"vvv"), ("a", 1, None, b"v"), ("b", 0, None, b"v")])
    assert store.stats("a") == StoreStats(records=2, bytes=6, oldest=1000.0)
    assert store.stats("b") == StoreStats(records=1, bytes=1, oldest=1000.0)
    assert store.stats("none") == StoreStats()
    assert store.total_bytes() == 7


async def test_wait_is_woken_by_an_append_and_times_out_otherwise(store: LogStore) -> None:
    assert await store.wait("t", 0, 0, timeout=0.05) is False
    waiter = asyncio.create_task(store.wait("t", 0, 0, timeout=60))
    await asyncio.sleep(0)  # let it start waiting (not a synchronization: it must wait anyway)
    assert not waiter.done()
    await store.append([("t", 0, None, b"v")])
    assert await asyncio.wait_for(waiter, 60) is True
    assert await store.wait("t", 0, 0, timeout=60) is True  # already there: at once


async def test_open_and_close_are_idempotent_and_close_finishes_accepted_appends(
        tmp_path: Path) -> None:
    s = LogStore(tmp_path, max_bytes=MiB)
    await s.open()
    await s.open()
    waiter = asyncio.create_task(s.wait("t", 0, 100, timeout=60))
    appends = [asyncio.create_task(s.append([("t", 0, None, b"v")])) for _ in range(20)]
    await asyncio.sleep(0)  # the appends are queued
    await s.close()
    assert sorted(o for [o] in await asyncio.gather(*appends)) == list(range(20))
    assert await asyncio.wait_for(waiter, 60) is False
    await s.close()
    with pytest.raises(BusUnavailable):
        await s.append([("t", 0, None, b"late")])
    with pytest.raises(BusUnavailable):
        await s.read("t", 0, 0, 1)
    await s.open()  # a closed store opens again
    try:
        assert s.end_offset("t", 0) == 20
    finally:
        await s.close()


async def test_a_second_open_of_the_directory_names_the_holder(store: LogStore) -> None:
    second = LogStore(store.path.parent, max_bytes=MiB)
    with pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
        await second.open()
    assert not second.is_open
    await store.close()
    await second.open()  # the lock went with the first
    await second.close()


async def test_size_bound_is_retriable_and_recovers_after_prune(tmp_path: Path) -> None:
    s = LogStore(tmp_path, max_bytes=MiB)
    await s.open()
    try:
        with pytest.raises(RecordRejected):
            await s.append([("t", 0, None, b"x" * (MiB + 1))])
        half = b"x" * (MiB // 2)
        await s.append([("t", 0, None, half)])
        await s.append([("t", 0, None, half)])
        with pytest.raises(BusUnavailable, match="full") as failed:
            await s.append([("t", 0, None, b"y")])
        assert failed.value.retriable
        assert s.end_offset("t", 0) == 2  # nothing half-written
        await s.commit("g", {TopicPartition("t", 0): 1})
        assert await s.prune("t", before_time=None, consumed_by=["g"]) == 1
        assert await s.append([("t", 0, None, b"y")]) == [2]
    finally:
        await s.close()


# ---- files that are not a sound log of ours: refused, named, never replaced ------

def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _newer(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.execute("CREATE TABLE records2 (x)")
    conn.commit()
    conn.close()


async def _truncated(path: Path) -> None:
    s = LogStore(path.parent, max_bytes=64 * MiB)
    await s.open()
    for _ in range(20):
        await s.append([("t", 0, None, os.urandom(4000)) for _ in range(10)])
    await s.close()
    _halve(path)


def _halve(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("damage", ["foreign", "garbage", "empty", "newer", "truncated"])
async def test_a_bad_file_is_busCorrupt_naming_it_and_left_alone(
        tmp_path: Path, damage: str) -> None:
    path = tmp_path / "log.db"
    if damage == "truncated":
        await _truncated(path)
    else:
        {"foreign": _foreign, "garbage": _garbage, "empty": _empty, "newer": _newer}[damage](path)
    before = path.read_bytes()
    s = LogStore(tmp_path, max_bytes=64 * MiB)
    with pytest.raises(BusCorrupt, match=str(path)) as refused:
        await s.open()
    assert not refused.value.retriable
    assert not s.is_open
    assert path.read_bytes() == before
    with pytest.raises(BusCorrupt):  # and the lock was released: the same answer again
        await s.open()


# ---- a full disk ----------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


async def test_full_disk_is_retriable_leaves_the_log_sound_and_recovers(
        small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * MiB)
    s = LogStore(small_disk / "data", max_bytes=1024 * MiB)
    await s.open()
    acked: list[int] = []
    try:
        failure = None
        for _ in range(1000):
            try:
                acked += await s.append([("t", 0, None, os.urandom(1000)) for _ in range(20)])
            except BusUnavailable as err:
                failure = err
                break
        assert failure is not None and failure.retriable, "the disk never filled"
        assert "disk full" in str(failure)
        assert s.last_write_error is failure
        assert acked and s.end_offset("t", 0) == len(acked)
        assert await s.quick_check() == ["ok"]
        filler.unlink()
        more = await s.append([("t", 0, None, b"after")])
        assert more == [len(acked)] and s.last_write_error is None
    finally:
        await s.close()
    again = LogStore(small_disk / "data", max_bytes=1024 * MiB)
    await again.open()  # validates: quick_check inside
    try:
        assert again.end_offset("t", 0) == len(acked) + 1
        assert len(await again.read("t", 0, 0, 10_000)) == len(acked) + 1
    finally:
        await again.close()


async def test_a_reader_beside_the_owner_reads_and_cannot_write(store: LogStore) -> None:
    await store.append([("t", 0, b"k", b"a"), ("t", 0, b"k", b"b")])
    await store.commit("g", {TopicPartition("t", 0): 1})
    reader = LogStore(store.path.parent, max_bytes=MiB, readonly=True)
    await reader.open()  # no lock taken: the owner holds it
    try:
        assert [r.value for r in await reader.read("t", 0, 0, 10)] == [b"a", b"b"]
        assert reader.committed("g", TopicPartition("t", 0)) == 1
        with pytest.raises(BusUnavailable, match="read-only"):
            await reader.append([("t", 0, None, b"no")])
        with pytest.raises(BusUnavailable, match="read-only"):
            await reader.commit("g", {TopicPartition("t", 0): 2})
        assert await store.append([("t", 0, None, b"c")]) == [2]  # the owner writes on
    finally:
        await reader.close()
    await store.close()
    stopped = LogStore(store.path.parent, max_bytes=MiB, readonly=True)
    await stopped.open()  # the owner gone (WAL checkpointed away): still readable
    try:
        assert stopped.end_offset("t", 0) == 3
    finally:
        await stopped.close()
