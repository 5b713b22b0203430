"""The synchronous half of :class:`pushrelay.infra.bus.store.LogStore`: one SQLite
database holding a partitioned log and consumer-group commits.

Everything here blocks (SQLite, fsync) and runs on the store's one dedicated
thread, on a connection created there; nothing here knows about asyncio. Every
``sqlite3``/``OSError`` failure is translated once, by :func:`translate`, into
the bus error that carries its retry policy.

Layout (docs/bus.md, "The embedded bus"): table ``records`` keyed by (topic,
partition, offset); table ``partitions`` with each partition's log start, next
offset and byte count (so offsets are never reused after a prune, and nothing is
counted by scanning); table ``commits`` with each group's next offset per
partition. A partition's records are always one contiguous offset range: the
log only ever grows at its end and is pruned from its start.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pushrelay.infra.bus.api import (
    BusCorrupt,
    BusError,
    BusUnavailable,
    Record,
    TopicPartition,
)

#: ``PRAGMA application_id`` of our databases: "PRLG" (pushrelay log).
APPLICATION_ID = 0x50524C47
#: ``PRAGMA user_version``: the schema this code writes and reads.
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    timestamp REAL NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE partitions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
CREATE TABLE commits (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
"""

#: How long a connection waits for another's lock (a reader's open, a checkpoint), ms.
BUSY_TIMEOUT_MS = 2000

#: One record to append: (topic, partition, key, value).
Entry = tuple[str, int, bytes | None, bytes]


class StoreLocked(BusUnavailable):
    """Another open store (this process or another) holds the directory's lock.

    Retriable: the holder may be a process on its way out (a rolling restart).
    """


class DiskFull(BusUnavailable):
    """The file system under the log has no room (``ENOSPC``, ``SQLITE_FULL``)."""


class StoreUnusable(BusError):
    """The data directory cannot be used as configured (not a directory, no
    permission, read-only): retrying the same settings will not help."""

    retriable = False


@dataclass(slots=True)
class PartitionState:
    """What the store keeps in memory about one partition (mirrors ``partitions``)."""

    start_offset: int = 0
    next_offset: int = 0
    bytes: int = 0
    #: Timestamp of the record at ``start_offset``; None when the partition is empty.
    oldest: float | None = None

    @property
    def records(self) -> int:
        return self.next_offset - self.start_offset


@dataclass(slots=True)
class Loaded:
    """The state read at open."""

    partitions: dict[TopicPartition, PartitionState]
    commits: dict[tuple[str, TopicPartition], int]


def record_size(key: bytes | None, value: bytes) -> int:
    """The bytes a record counts for in the size bound (key + value)."""
    return len(value) + (len(key) if key is not None else 0)


#: ``OSError`` numbers that retrying does not cure: the path is wrong, not busy.
_UNUSABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                              errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG})
#: SQLite primary result codes with the same meaning.
_UNUSABLE_CODES = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
                             sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH})


def translate(err: BaseException, path: Path) -> BusError:
    """The bus error for a failure of SQLite or of the file system under ``path``:
    :class:`DiskFull` and other I/O trouble are retriable; a damaged file is
    :class:`BusCorrupt`; a path we may not or cannot use is :class:`StoreUnusable`."""
    if isinstance(err, BusError):
        return err
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == sqlite3.SQLITE_FULL:
            return DiskFull(f"{path}: disk full ({err})")
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return BusCorrupt(f"{path}: damaged or not a pushrelay log: {err}")
        if primary in _UNUSABLE_CODES:
            return StoreUnusable(f"{path}: {err}")
        if isinstance(err, sqlite3.OperationalError):
            return BusUnavailable(f"{path}: {err}")
        return BusCorrupt(f"{path}: {err}")
    if isinstance(err, OSError):
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(f"{path}: disk full ({err})")
        if err.errno in _UNUSABLE_ERRNOS:
            return StoreUnusable(f"{path}: {err}")
        return BusUnavailable(f"{path}: {err}")
    raise TypeError(f"not a storage error: {err!r}") from err


class DirectoryLock:
    """An exclusive ``flock`` on a lock file, holding the owner's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"{self.path.parent} is in use by another open log (pid {holder}); "
                "one process per data directory") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the description releases the flock
            self._fd = None


class SqliteLog:
    """The database of one :class:`~pushrelay.infra.bus.store.LogStore`.

    Not thread-safe: every method is called on the store's one thread.
    ``readonly``: a reader beside the owning process (no lock, no writes, no
    integrity check: the owner ran it).
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = DirectoryLock(path.with_name(path.name + ".lock"))
        self._conn: sqlite3.Connection | None = None

    # ---- open / close --------------------------------------------------------

    def open(self) -> Loaded:
        """Lock the directory, open (or create) and validate the database, load
        its state. Raises :class:`StoreLocked`, :class:`BusCorrupt` (naming the
        file) or :class:`BusUnavailable`; on any error nothing stays open."""
        try:
            if self.readonly:
                self._conn = self._connect()
                return self._load(self._conn)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
            if not self.path.exists():
                self._create()
            self._conn = self._connect()
            return self._load(self._conn)
        except BaseException as err:
            self.close()
            if isinstance(err, (sqlite3.Error, OSError)):
                raise translate(err, self.path) from err
            raise

    def close(self) -> None:
        """Close the connection (checkpointing the WAL) and release the lock."""
        try:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()
        finally:
            self._lock.release()

    def _create(self) -> None:
        """Create an empty log under a temporary name and move it into place, so
        ``path`` is either absent or a complete, valid log (a zero-length or
        half-initialized file is never ours)."""
        tmp = self.path.with_name(self.path.name + ".new")
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm"),
                         tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("COMMIT")
        finally:
            conn.close()  # the last connection checkpoints and removes the WAL
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dirfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def _connect(self) -> sqlite3.Connection:
        """Open the existing file (never creating one) and check it is ours before
        changing anything in it."""
        uri = f"file:{self.path}?mode={'ro' if self.readonly else 'rw'}"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id != APPLICATION_ID:
                raise BusCorrupt(f"{self.path}: not a pushrelay log (SQLite application_id "
                                 f"{app_id:#x}, expected {APPLICATION_ID:#x}); refusing to "
                                 "use or replace it")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise BusCorrupt(f"{self.path}: schema version {version}, this pushrelay "
                                 f"reads version {SCHEMA_VERSION} only (written by a newer "
                                 "release?)")
            if self.readonly:
                return conn
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise BusUnavailable(f"{self.path}: cannot use WAL journal (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise BusCorrupt(f"{self.path}: integrity check failed: {'; '.join(problems)}")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _load(conn: sqlite3.Connection) -> Loaded:
        partitions: dict[TopicPartition, PartitionState] = {}
        rows = conn.execute(
            "SELECT p.topic, p.partition, p.start_offset, p.next_offset, p.bytes, "
            "(SELECT r.timestamp FROM records r WHERE r.topic = p.topic AND "
            " r.partition = p.partition AND r.offset = p.start_offset) FROM partitions p")
        for topic, partition, start, end, size, oldest in rows:
            partitions[TopicPartition(topic, partition)] = PartitionState(start, end, size, oldest)
        commits = {
            (grp, TopicPartition(topic, partition)): offset
            for grp, topic, partition, offset in conn.execute(
                "SELECT grp, topic, partition, offset FROM commits")
        }
        return Loaded(partitions, commits)

    # ---- operations ----------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BusUnavailable(f"{self.path}: the log is closed")
        return self._conn

    def _transaction(self, work: Iterable[tuple[str, Sequence[object]]]) -> None:
        """Run statements in one write transaction, committed (fsync'd) or rolled
        back as a whole; failures translated."""
        if self.readonly:
            raise BusUnavailable(f"{self.path}: opened read-only (another process owns it)")
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in work:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as err:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite may have rolled back itself (SQLITE_FULL)
            raise translate(err, self.path) from err

    def append(self, entries: Sequence[tuple[int, Entry]], timestamp: float,
               partitions: Mapping[TopicPartition, PartitionState]) -> None:
        """Insert ``(offset, entry)`` pairs in one transaction, and set each
        touched partition's row to ``partitions[tp]`` (the state after it)."""

        def work() -> Iterable[tuple[str, Sequence[object]]]:
            for offset, (topic, partition, key, value) in entries:
                yield ("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)",
                       (topic, partition, offset, key, value, timestamp))
            for tp, state in partitions.items():
                yield ("INSERT INTO partitions VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                       "SET start_offset = excluded.start_offset, "
                       "next_offset = excluded.next_offset, bytes = excluded.bytes",
                       (tp.topic, tp.partition, state.start_offset, state.next_offset,
                        state.bytes))

        self._transaction(work())

    def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._transaction(
            ("INSERT INTO commits VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE "
             "SET offset = excluded.offset", (group, tp.topic, tp.partition, offset))
            for tp, offset in offsets.items())

    def read(self, tp: TopicPartition, offset: int, max_records: int) -> list[Record]:
        try:
            rows = self.conn.execute(
                "SELECT offset, key, value, timestamp FROM records WHERE topic = ? AND "
                "partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
                (tp.topic, tp.partition, offset, max_records)).fetchall()
        except (sqlite3.Error, OSError) as err:
            raise translate(err, self.path) from err
        return [Record(tp.topic, tp.partition, off, key, value, ts)
                for off, key, value, ts in rows]

    def first_young(self, tp: TopicPartition, start: int, end: int, before_time: float) -> int:
        """The offset of the partition's first record not older than
        ``before_time`` (``end`` when there is none); reads only the old prefix."""
        try:
            row = self.conn.execute(
                "SELECT offset FROM records WHERE topic = ? AND partition = ? AND offset >= ? "
                "AND timestamp >= ? ORDER BY offset LIMIT 1",
                (tp.topic, tp.partition, start, before_time)).fetchone()
        except (sqlite3.Error, OSError) as err:
            raise translate(err, self.path) from err
        return end if row is None else int(row[0])

    def truncate(self, tp: TopicPartition, before: int) -> PartitionState:
        """Delete the partition's records below ``before``; the new state."""
        conn = self.conn
        try:
            start, end, size = conn.execute(
                "SELECT start_offset, next_offset, bytes FROM partitions "
                "WHERE topic = ? AND partition = ?", (tp.topic, tp.partition)).fetchone()
            before = min(max(before, start), end)
            removed = conn.execute(
                "SELECT ifnull(sum(length(value) + ifnull(length(key), 0)), 0) FROM records "
                "WHERE topic = ? AND partition = ? AND offset < ?",
                (tp.topic, tp.partition, before)).fetchone()[0]
        except (sqlite3.Error, OSError) as err:
            raise translate(err, self.path) from err
        self._transaction([
            ("DELETE FROM records WHERE topic = ? AND partition = ? AND offset < ?",
             (tp.topic, tp.partition, before)),
            ("UPDATE partitions SET start_offset = ?, bytes = ? WHERE topic = ? AND "
             "partition = ?", (before, size - removed, tp.topic, tp.partition)),
        ])
        oldest = None
        if before < end:
            oldest = self.read(tp, before, 1)[0].timestamp
        return PartitionState(before, end, size - removed, oldest)

    def free_bytes(self) -> int:
        """Bytes available to us on the log's file system."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError as err:
            raise translate(err, self.path) from err
        return st.f_bavail * st.f_frsize

    def quick_check(self) -> list[str]:
        """``PRAGMA quick_check``'s findings (``["ok"]`` when sound)."""
        try:
            return [row[0] for row in self.conn.execute("PRAGMA quick_check")]
        except (sqlite3.Error, OSError) as err:
            raise translate(err, self.path) from err
