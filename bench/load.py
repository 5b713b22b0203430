"""Load generation: an open-loop fixed-rate generator and a burst sender.

wrk2 (the fixed-rate wrk) is not packaged by Debian, so fixed-rate load is
generated here. It is *open loop*: request ``i`` is due at ``t0 + i / rate``
whether or not earlier ones were answered, and its latency is measured from
that due time, so a slow server cannot hide its queueing by slowing the load
down ("coordinated omission").

The client is a deliberately small HTTP/1.1 keep-alive client on asyncio
streams (one request per connection at a time, a pool of connections): a full
HTTP client library costs several times more CPU per request, and on a small
machine the load generator competes with the server for the same cores. It
speaks only to loopback servers we started ourselves.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.common import percentile

TIMEOUT = 10.0  # Quay's delivery timeout


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class Pool:
    """At most ``size`` keep-alive connections to one host; waiters queue FIFO."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self._idle: list[_Conn] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[_Conn | None]] = collections.deque()

    async def _acquire(self) -> _Conn:
        if self._idle:
            return self._idle.pop()
        if self._open < self.size:
            self._open += 1
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except BaseException:
                self._open -= 1
                raise
            return _Conn(reader, writer)
        waiter: asyncio.Future[_Conn | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        conn = await waiter
        return conn if conn is not None else await self._acquire()

    def _release(self, conn: _Conn | None) -> None:
        """Give a connection back (None: it was closed, its slot is free)."""
        if conn is None:
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)  # None: the waiter opens its own connection
                return
        if conn is not None:
            self._idle.append(conn)

    async def request(self, raw: bytes) -> int:
        """Send one prepared request; return the status (the body is read and dropped)."""
        conn = await self._acquire()
        try:
            conn.writer.write(raw)
            head = await conn.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            start = lower.find(b"\r\ncontent-length:")
            if start >= 0:
                end = lower.index(b"\r\n", start + 2)
                length = int(lower[start + 17:end])
                if length:
                    await conn.reader.readexactly(length)
            elif b"transfer-encoding: chunked" in lower:
                while True:
                    size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await conn.reader.readexactly(size + 2)
                    if size == 0:
                        break
            if b"\r\nconnection: close" in lower:
                conn.close()
                self._release(None)
            else:
                self._release(conn)
            return status
        except BaseException:
            conn.close()
            self._release(None)
            raise

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def post_request(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    """The bytes of one keep-alive ``POST`` with a JSON body."""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nUser-Agent: pushrelay-bench\r\n\r\n"
            ).encode() + body


@dataclass
class RunResult:
    """What a load run did: per-request latencies (s) and outcomes."""

    sent: int = 0
    seconds: float = 0.0  # from the first due time to the last answer
    latencies: list[float] = field(default_factory=list)  # answered with 2xx
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def merge(self, other: RunResult) -> RunResult:
        """Two runs as one (latencies pooled, time added)."""
        return RunResult(sent=self.sent + other.sent, seconds=self.seconds + other.seconds,
                         latencies=self.latencies + other.latencies,
                         statuses=self.statuses + other.statuses,
                         errors=self.errors + other.errors)


#: on_done(i, status, due, answered) — monotonic times; status 0 on error.
OnDone = Callable[[int, int, float, float], None]


async def fixed_rate(pool: Pool, requests: Callable[[int], bytes], rate: float, seconds: float,
                     on_done: OnDone | None = None, drain: float = 15.0) -> RunResult:
    """``rate`` requests/s for ``seconds`` (open loop), then wait ``drain`` s at most."""
    total = int(rate * seconds)
    result = RunResult(sent=total)
    tasks: set[asyncio.Task[None]] = set()
    last = [0.0]

    async def one(i: int, due: float) -> None:
        status = 0
        try:
            async with asyncio.timeout(TIMEOUT):
                status = await pool.request(requests(i))
        except TimeoutError:
            result.errors["timeout"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.errors[type(exc).__name__] += 1
        done = time.monotonic()
        last[0] = max(last[0], done)
        if status:
            result.statuses[status] += 1
            if 200 <= status < 300:
                result.latencies.append(done - due)
        if on_done is not None:
            on_done(i, status, due, done)

    start = time.monotonic() + 0.01
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=drain)
        for task in pending:
            task.cancel()
        result.errors["unanswered"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    result.seconds = max(last[0], start) - start
    return result


async def burst(pool: Pool, requests: Sequence[bytes], concurrency: int,
                on_done: OnDone | None = None) -> RunResult:
    """Send every request as fast as ``concurrency`` workers can (closed loop)."""
    result = RunResult(sent=len(requests))
    cursor = iter(range(len(requests)))
    start = time.monotonic()

    async def worker() -> None:
        for i in cursor:
            sent = time.monotonic()
            status = 0
            try:
                async with asyncio.timeout(TIMEOUT):
                    status = await pool.request(requests[i])
            except TimeoutError:
                result.errors["timeout"] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                result.errors[type(exc).__name__] += 1
            done = time.monotonic()
            if status:
                result.statuses[status] += 1
                if 200 <= status < 300:
                    result.latencies.append(done - sent)
            if on_done is not None:
                on_done(i, status, sent, done)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.monotonic() - start
    return result


def now() -> float:
    """The clock every latency in the benchmarks is measured on.

    Not ``loop.time()``: uvloop's is cached per loop iteration, in milliseconds.
    """
    return time.monotonic()
