"""A steady, bounded load of Quay pushes to one ingress receiver, on loopback only.

Run as its own process (``python -m tests.faults.loadgen``), so the time it
records for a ``202`` is not skewed by whatever the test process is doing. Push
``p`` is sent at ``start + p / rate``; it goes to repository ``p % repos`` with
the tag ``1.<p % unique>.0`` (see :mod:`tests.faults.plan`). One JSON line per
push is appended to ``--out`` as soon as its answer (or error) arrives::

    {"p": 17, "status": 202, "sent_ns": ..., "done_ns": ..., "delivery": "...",
     "retry_after": null, "error": null}

It stops by itself after ``--count`` pushes or ``--duration`` seconds, or when
``--stop-file`` appears, then waits for the answers still in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import aiohttp
import orjson

from pushrelay_devstack import hostnet
from tests.faults.plan import Plan

CLIENT_TIMEOUT = 10.0  # Quay's own delivery timeout
MAX_IN_FLIGHT = 200


def payload(repository: str, tag: str) -> bytes:
    namespace, _, name = repository.removeprefix("quay.io/").partition("/")
    return orjson.dumps({
        "name": name, "repository": f"{namespace}/{name}", "namespace": namespace,
        "docker_url": repository, "homepage": f"https://{repository}",
        "updated_tags": [tag],
    })


def _stopped(stop_file: Path | None) -> bool:
    return stop_file is not None and stop_file.exists()


def _check_loopback(url: str) -> None:
    """Loopback, or a Service of the devstack's node (routed to its bridge, never off
    the machine: see pushrelay_devstack.hostnet)."""
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return
    address = ipaddress.ip_address(host)
    if not (address.is_loopback or address in ipaddress.ip_network(hostnet.SERVICE_CIDR)):
        raise SystemExit(f"loadgen: refusing to send to {host}: loopback only")


async def _push(http: aiohttp.ClientSession, url: str, plan: Plan, p: int,
                out: IO[bytes], gate: asyncio.Semaphore) -> None:
    repository, tag = plan.push(p)
    record: dict[str, Any] = {"p": p, "status": None, "delivery": None, "retry_after": None,
                              "error": None}
    async with gate:
        record["sent_ns"] = time.time_ns()
        try:
            async with http.post(url, data=payload(repository, tag),
                                 headers={"Content-Type": "application/json"}) as resp:
                body = await resp.read()
                record["done_ns"] = time.time_ns()
                record["status"] = resp.status
                record["retry_after"] = resp.headers.get("Retry-After")
                if resp.status == 202:
                    record["delivery"] = orjson.loads(body)["delivery"]
                elif resp.status != 503:
                    record["error"] = body[:200].decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            record["done_ns"] = time.time_ns()
            record["error"] = f"{type(exc).__name__}: {exc}"[:200]
    out.write(orjson.dumps(record) + b"\n")
    out.flush()


async def run(url: str, plan: Plan, rate: float, count: int, duration: float,
              stop_file: Path | None, out_path: Path) -> int:
    _check_loopback(url)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    with out_path.open("ab") as out:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            start = time.monotonic()
            while sent < count:
                due = start + sent / rate
                now = time.monotonic()
                if now - start >= duration or _stopped(stop_file):
                    break
                if due > now:
                    await asyncio.sleep(min(due - now, 0.2))
                    continue
                task = asyncio.create_task(_push(http, url, plan, sent, out, gate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            if tasks:
                await asyncio.gather(*tasks)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="full receiver URL (loopback)")
    parser.add_argument("--plan", required=True, help="Plan as JSON")
    parser.add_argument("--rate", type=float, default=8.0, help="pushes per second")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds, at most")
    parser.add_argument("--stop-file", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    plan = Plan(**orjson.loads(args.plan))
    sent = asyncio.run(run(args.url, plan, args.rate, args.count, min(args.duration, 900.0),
                           args.stop_file, args.out))
    print(f"loadgen: {sent} pushes sent", flush=True)


if __name__ == "__main__":
    main()
