"""A TCP proxy that adds latency, for "slow network between stages" (no tc/netns).

``python -m tests.faults.proxy --listen PORT --target PORT [--delay S] [--jitter S]``
forwards 127.0.0.1:PORT to 127.0.0.1:TARGET. Every chunk read in either
direction is written ``delay ± jitter`` seconds later, in order (latency is
added, bandwidth is not capped). ``--control FILE`` (JSON ``{"delay": s,
"jitter": s}``) is re-read every 0.2 s, so a test can change the delay of live
connections. Loopback only, by construction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from pathlib import Path

import orjson

HOST = "127.0.0.1"
CHUNK = 64 * 1024


class Delay:
    def __init__(self, delay: float, jitter: float, control: Path | None) -> None:
        self.delay, self.jitter, self.control = delay, jitter, control
        self._mtime = 0.0

    def sample(self) -> float:
        return max(0.0, self.delay + random.uniform(-self.jitter, self.jitter))

    async def follow(self) -> None:
        while self.control is not None:
            with contextlib.suppress(OSError, ValueError):
                mtime = self.control.stat().st_mtime
                if mtime != self._mtime:
                    self._mtime = mtime
                    doc = orjson.loads(self.control.read_bytes())
                    self.delay = float(doc.get("delay", self.delay))
                    self.jitter = float(doc.get("jitter", self.jitter))
            await asyncio.sleep(0.2)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay: Delay) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def pump() -> None:
        last_due = 0.0
        while True:
            data = await reader.read(CHUNK)
            last_due = max(last_due, time.monotonic() + delay.sample())
            await queue.put((last_due, data))
            if not data:
                return

    async def drain() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.create_task(pump()), asyncio.create_task(drain())]
    try:
        await asyncio.gather(*tasks)
    except (ConnectionError, OSError):
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve(listen: int, target: int, delay: Delay) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(HOST, target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(_pipe(client_r, up_w, delay), _pipe(up_r, client_w, delay))
        finally:
            for w in (client_w, up_w):
                w.close()

    server = await asyncio.start_server(handle, HOST, listen, reuse_address=True)
    follower = asyncio.create_task(delay.follow())
    print(f"proxy: 127.0.0.1:{listen} -> 127.0.0.1:{target}", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        follower.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds, one way")
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--control", type=Path)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.target, Delay(args.delay, args.jitter, args.control)))


if __name__ == "__main__":
    main()
