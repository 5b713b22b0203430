"""A durable, partitioned log in one directory: the embedded bus's store, and the
ingress spool's (docs/bus.md).

:class:`LogStore` is the asyncio face of one SQLite database
(:mod:`.sqlitelog`): WAL journal, ``synchronous=FULL``, every SQLite call on
one dedicated thread owned by the store, never on the event loop. Appends from
concurrent callers are *grouped*: a writer task takes every append waiting at
that moment into one transaction, so one fsync acknowledges many requests.

What is answered from memory (kept in step with the database after every
successful transaction): each partition's offsets and byte count, each group's
commit, per-topic stats. What goes to the thread: appends, commits, reads,
prunes, checks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from pushrelay.infra.bus.api import BusError, BusUnavailable, Record, RecordRejected, TopicPartition
from pushrelay.infra.bus.sqlitelog import (
    DiskFull,
    Entry,
    PartitionState,
    SqliteLog,
    StoreLocked,
    StoreUnusable,
    record_size,
)

__all__ = ["DiskFull", "Entry", "LogStore", "StoreLocked", "StoreStats", "StoreUnusable"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoreStats:
    """One topic's share of the log."""

    records: int = 0
    #: Keys + values, the quantity ``max_bytes`` bounds.
    bytes: int = 0
    #: Timestamp of the oldest record still stored; None when there is none.
    oldest: float | None = None


@dataclass(slots=True)
class _Append:
    entries: Sequence[Entry]
    size: int
    done: asyncio.Future[list[int]]


class LogStore:
    """A durable log of ``(topic, partition)`` partitions plus consumer-group commits.

    Contract:

    * :meth:`append` returns once its records are committed and fsync'd, with
      their offsets (consecutive per partition, in the order given); it raises
      :class:`BusUnavailable` (retriable) when the disk is full or the log holds
      ``max_bytes`` already, :class:`RecordRejected` when the request alone is
      larger than ``max_bytes``. A failed append was rolled back (should the
      commit's own fsync fail, it may still be there: a duplicate at worst).
    * Offsets are never reused: pruning removes a partition's oldest records,
      :meth:`end_offset` keeps counting.
    * One owner per directory (a ``flock``): a second gets :class:`StoreLocked`
      naming the holder's pid; ``readonly`` stores read beside it. A file that is not a
      sound pushrelay log of this schema version is :class:`BusCorrupt`
      (naming it), never re-created.
    * :meth:`open` and :meth:`close` are idempotent; :meth:`close` lets the
      appends already accepted finish; after it, calls raise
      :class:`BusUnavailable`, :meth:`wait` returns False.
    """

    def __init__(self, directory: str | Path, *, max_bytes: int, filename: str = "log.db",
                 clock: Callable[[], float] = time.time, readonly: bool = False) -> None:
        """``readonly``: read beside the process that owns the directory (no lock
        taken; appends, commits and prunes are :class:`BusUnavailable`; offsets,
        commits and stats are those of the moment of :meth:`open`)."""
        self.path = Path(directory) / filename
        self.max_bytes = max_bytes
        self.readonly = readonly
        self._clock = clock
        self._db = SqliteLog(self.path, readonly=readonly)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._writer: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Append | None] = asyncio.Queue()
        self._lifecycle = asyncio.Lock()
        #: Held by the writer's transactions and by prune: one changes partitions at a time.
        self._writing = asyncio.Lock()
        self._open = False
        self._closing = False
        self._partitions: dict[TopicPartition, PartitionState] = {}
        self._commits: dict[tuple[str, TopicPartition], int] = {}
        self._changed: dict[TopicPartition, asyncio.Condition] = {}
        #: Append transactions committed since open (each is one fsync'd commit).
        self.transactions = 0
        #: Why the last append transaction failed; None once any write (append,
        #: commit, prune) succeeds again.
        self.last_write_error: BusError | None = None

    # ---- lifecycle -----------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        """Create or open the log (see the class contract). Idempotent."""
        async with self._lifecycle:
            if self._open:
                return
            executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"logstore:{self.path.name}")
            try:
                loaded = await asyncio.get_running_loop().run_in_executor(executor, self._db.open)
            except BaseException:
                # Cancelled meanwhile, the open may still succeed on the thread:
                # close after it (the one thread runs jobs in order), then let it go.
                executor.submit(self._db.close)
                executor.shutdown(wait=False)
                raise
            self._executor = executor
            self._partitions = loaded.partitions
            self._commits = loaded.commits
            self.transactions = 0
            self.last_write_error = None
            self._queue = asyncio.Queue()
            self._writer = asyncio.create_task(self._write_loop(), name=f"logstore:{self.path}")
            self._open, self._closing = True, False

    async def close(self) -> None:
        """Finish the appends already accepted, close the database, release the
        directory. Idempotent."""
        async with self._lifecycle:
            if not self._open:
                return
            assert self._writer is not None and self._executor is not None
            self._closing = True
            self._queue.put_nowait(None)
            await self._writer
            self._writer = None
            self._open = False
            for condition in self._changed.values():
                async with condition:
                    condition.notify_all()
            executor, self._executor = self._executor, None
            try:
                await asyncio.get_running_loop().run_in_executor(executor, self._db.close)
            finally:
                executor.shutdown(wait=False)  # idle: its one thread exits at once

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if not self._open or self._executor is None:
            raise BusUnavailable(f"{self.path}: the log is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---- appends (group commit) -----------------------------------------------

    async def append(self, records: Sequence[Entry]) -> list[int]:
        """Append ``(topic, partition, key, value)`` records; their offsets, once
        durable. All of them or none (see the class contract)."""
        return await self.submit(records)

    def submit(self, records: Sequence[Entry]) -> asyncio.Future[list[int]]:
        """:meth:`append` without waiting: queue the records now (so the order of
        calls is the order of offsets) and return the future of their offsets.
        Raises at once what :meth:`append` raises before queuing."""
        if not self._open or self._closing:
            raise BusUnavailable(f"{self.path}: the log is closed")
        if self.readonly:
            raise BusUnavailable(f"{self.path}: opened read-only (another process owns it)")
        size = sum(record_size(key, value) for _, _, key, value in records)
        if size > self.max_bytes:
            raise RecordRejected(f"{size} bytes in one append, more than the log's bound "
                                 f"({self.max_bytes})")
        done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        if not records:
            done.set_result([])
        else:
            self._queue.put_nowait(_Append(records, size, done))
        return done

    async def _write_loop(self) -> None:
        """The one writer: each turn commits every append waiting at that moment
        in one transaction. Ends at the ``None`` :meth:`close` queues, after
        the appends queued before it."""
        while True:
            batch: list[_Append] = []
            item = await self._queue.get()
            while item is not None:
                batch.append(item)
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._write(batch)
            if item is None:
                return

    async def _write(self, batch: list[_Append]) -> None:
        async with self._writing:
            await self._write_locked(batch)

    async def _write_locked(self, batch: list[_Append]) -> None:
        total = sum(state.bytes for state in self._partitions.values())
        accepted: list[tuple[_Append, list[int]]] = []
        after: dict[TopicPartition, PartitionState] = {}
        rows: list[tuple[int, Entry]] = []
        timestamp = self._clock()
        for request in batch:
            if request.done.cancelled():
                continue
            if total + request.size > self.max_bytes:
                request.done.set_exception(BusUnavailable(
                    f"{self.path}: the log is full ({total} of {self.max_bytes} bytes); "
                    "waiting for consumers and retention"))
                continue
            total += request.size
            offsets = []
            for entry in request.entries:
                topic, partition, key, value = entry
                tp = TopicPartition(topic, partition)
                state = after.get(tp)
                if state is None:
                    state = after[tp] = replace(self._partitions.get(tp) or PartitionState())
                if state.oldest is None:
                    state.oldest = timestamp
                offsets.append(state.next_offset)
                rows.append((state.next_offset, entry))
                state.next_offset += 1
                state.bytes += record_size(key, value)
            accepted.append((request, offsets))
        if not accepted:
            return
        try:
            await self._call(self._db.append, rows, timestamp, after)
        except BusError as err:
            self.last_write_error = err
            for request, _ in accepted:
                if not request.done.done():
                    request.done.set_exception(err)
            return
        except Exception as err:  # noqa: BLE001 - a bug: every caller sees it, the writer lives on
            for request, _ in accepted:
                if not request.done.done():
                    request.done.set_exception(err)
            return
        except BaseException:  # cancelled: the outcome is unknown to us, so to them
            for request, _ in accepted:
                request.done.cancel()
            raise
        self.transactions += 1
        self.last_write_error = None
        self._partitions.update(after)
        for request, offsets in accepted:
            if not request.done.done():
                request.done.set_result(offsets)
        for tp in after:
            condition = self._changed.get(tp)
            if condition is not None:
                async with condition:
                    condition.notify_all()

    # ---- reads and offsets ---------------------------------------------------

    async def read(self, topic: str, partition: int, offset: int,
                   max_records: int) -> list[Record]:
        """Up to ``max_records`` records from ``offset`` on (from the partition's
        oldest when ``offset`` was pruned), in offset order."""
        tp = TopicPartition(topic, partition)
        if max_records <= 0 or offset >= self.end_offset(topic, partition):
            if not self._open:
                raise BusUnavailable(f"{self.path}: the log is closed")
            return []
        return await self._call(self._db.read, tp, offset, max_records)

    def end_offset(self, topic: str, partition: int) -> int:
        """The offset the next record of the partition will get (0 for a new one)."""
        state = self._partitions.get(TopicPartition(topic, partition))
        return state.next_offset if state else 0

    def start_offset(self, topic: str, partition: int) -> int:
        """The offset of the partition's oldest stored record (== end when empty)."""
        state = self._partitions.get(TopicPartition(topic, partition))
        return state.start_offset if state else 0

    def partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic`` that have ever had a record, sorted."""
        return sorted(tp.partition for tp in self._partitions if tp.topic == topic)

    async def wait(self, topic: str, partition: int, offset: int,
                   timeout: float) -> bool:  # noqa: ASYNC109 (a bound, like poll(wait=))
        """Wait up to ``timeout`` s until ``end_offset > offset``; whether it is.
        Woken by appends (no polling); False at once when the store is closed."""
        tp = TopicPartition(topic, partition)
        condition = self._changed.setdefault(tp, asyncio.Condition())

        def ready() -> bool:
            return not self._open or self.end_offset(topic, partition) > offset

        async with condition:
            try:
                await asyncio.wait_for(condition.wait_for(ready), timeout)
            except TimeoutError:
                pass
        return self._open and self.end_offset(topic, partition) > offset

    # ---- consumer groups -----------------------------------------------------

    async def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Durably store ``group``'s next offset per partition (fsync'd on return)."""
        offsets = {TopicPartition(*tp): offset for tp, offset in offsets.items()}
        if any(offset < 0 for offset in offsets.values()):
            raise ValueError(f"negative offset in {offsets}")
        if not offsets:
            return
        await self._call(self._db.commit, group, offsets)
        self.last_write_error = None
        for tp, offset in offsets.items():
            self._commits[(group, tp)] = offset

    def groups(self, topic: str) -> set[str]:
        """The groups that have committed on some partition of ``topic``."""
        return {group for group, tp in self._commits if tp.topic == topic}

    def committed(self, group: str, tp: TopicPartition) -> int | None:
        """``group``'s last commit on ``tp``, None when it never committed there."""
        return self._commits.get((group, TopicPartition(*tp)))

    # ---- retention -----------------------------------------------------------

    async def prune(self, topic: str, *, before_time: float | None,
                    consumed_by: Sequence[str]) -> int:
        """Delete, in each partition of ``topic``, the oldest records that are
        older than ``before_time`` (up to the first record that is not) or below
        the commit of every group in ``consumed_by`` (a group that never
        committed holds everything); whichever reaches further. The number of
        records deleted."""
        deleted = 0
        for tp in [tp for tp in self._partitions if tp.topic == topic]:
            async with self._writing:  # the partition's state stays as read here
                state = self._partitions[tp]
                cutoff = state.start_offset
                if consumed_by:
                    commits = [self._commits.get((group, tp)) for group in consumed_by]
                    cutoff = max(cutoff, min(c if c is not None else 0 for c in commits))
                if before_time is not None and state.oldest is not None \
                        and state.oldest < before_time:
                    young = await self._call(self._db.first_young, tp, state.start_offset,
                                             state.next_offset, before_time)
                    cutoff = max(cutoff, young)
                cutoff = min(cutoff, state.next_offset)
                if cutoff <= state.start_offset:
                    continue
                self._partitions[tp] = new = await self._call(self._db.truncate, tp, cutoff)
                self.last_write_error = None
                deleted += new.start_offset - state.start_offset
        return deleted

    # ---- observation ---------------------------------------------------------

    def stats(self, topic: str) -> StoreStats:
        """``topic``'s records, bytes and oldest timestamp (from memory)."""
        states = [s for tp, s in self._partitions.items() if tp.topic == topic]
        oldest = [s.oldest for s in states if s.oldest is not None and s.records]
        return StoreStats(records=sum(s.records for s in states),
                          bytes=sum(s.bytes for s in states),
                          oldest=min(oldest) if oldest else None)

    def total_bytes(self) -> int:
        """Keys + values of every stored record (what ``max_bytes`` bounds)."""
        return sum(state.bytes for state in self._partitions.values())

    async def free_bytes(self) -> int:
        """Bytes available on the log's file system (``statvfs``, on the store's thread)."""
        return await self._call(self._db.free_bytes)

    async def quick_check(self) -> list[str]:
        """SQLite's ``PRAGMA quick_check`` on the open log (``["ok"]`` when sound)."""
        return await self._call(self._db.quick_check)
