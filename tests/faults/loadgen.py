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

``--quay`` makes it deliver as Quay does (:mod:`tests.faults.quay`): the
repository is the notification; a failed delivery (non-2xx, no answer in 10 s,
connection refused) is sent again ``--retry-after`` s later (default Quay's 30 s)
as ``attempt`` 1, 2, ...; after ``--disable-after`` (3) consecutive failures the
notification is disabled and that repository's later pushes are not sent.
Retries still scheduled when the run stops are abandoned (counted). The last
line is then a summary::

    {"summary": {"disabled": {"quay.io/...": <ns>}, "suppressed": 0, "abandoned": 0, ...}}

``--pad-tags N`` adds N non-SemVer 100-character tags to every push (big events,
matching nothing more), to fill a size-bounded spool quickly.
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
from tests.faults.quay import DELIVERY_TIMEOUT, Attempt, Notifications, QuayPolicy, ok_status

CLIENT_TIMEOUT = DELIVERY_TIMEOUT  # Quay's own delivery timeout
MAX_IN_FLIGHT = 200
PAD_TAG_CHARS = 100


def payload(repository: str, tag: str, pad_tags: int = 0) -> bytes:
    namespace, _, name = repository.removeprefix("quay.io/").partition("/")
    padding = [f"pad-{i:04d}-".ljust(PAD_TAG_CHARS, "x") for i in range(pad_tags)]
    return orjson.dumps({
        "name": name, "repository": f"{namespace}/{name}", "namespace": namespace,
        "docker_url": repository, "homepage": f"https://{repository}",
        "updated_tags": [tag, *padding],
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


class Sender:
    """Sends the plan's pushes and records each attempt; Quay's retry rules if ``quay``."""

    def __init__(self, http: aiohttp.ClientSession, url: str, plan: Plan, out: IO[bytes],
                 quay: Notifications | None, pad_tags: int) -> None:
        self.http, self.url, self.plan, self.out = http, url, plan, out
        self.quay = quay
        self.pad_tags = pad_tags
        self.gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()

    def push(self, p: int) -> None:
        repository, _ = self.plan.push(p)
        attempt: Attempt | None = Attempt(p, 0, repository)
        if self.quay is not None:
            attempt = self.quay.push(p, repository)
        if attempt is not None:
            self._spawn(attempt)

    def retries(self, now: float) -> None:
        if self.quay is not None:
            for attempt in self.quay.due(now):
                self._spawn(attempt)

    def next_retry(self) -> float | None:
        return self.quay.next_due() if self.quay is not None else None

    def _spawn(self, attempt: Attempt) -> None:
        task = asyncio.create_task(self._send(attempt))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, attempt: Attempt) -> None:
        repository, tag = self.plan.push(attempt.p)
        record: dict[str, Any] = {"p": attempt.p, "attempt": attempt.attempt, "status": None,
                                  "delivery": None, "retry_after": None, "error": None}
        async with self.gate:
            record["sent_ns"] = time.time_ns()
            try:
                async with self.http.post(self.url, data=payload(repository, tag, self.pad_tags),
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
                # refused or dropped (a killed server), as opposed to no answer in time
                record["conn"] = not isinstance(exc, TimeoutError) and isinstance(
                    exc, (aiohttp.ClientConnectionError, OSError))
        if self.quay is not None:
            retry = self.quay.outcome(attempt, ok_status(record["status"]), time.monotonic())
            record["retry"] = retry is not None
            if not self.quay.enabled(repository):
                record["disabled"] = True
        self.out.write(orjson.dumps(record) + b"\n")
        self.out.flush()

    def summary(self) -> dict[str, Any]:
        if self.quay is None:
            return {}
        now_ns, now = time.time_ns(), time.monotonic()
        return {"disabled": {r: now_ns - int((now - at) * 1e9)
                             for r, at in self.quay.disabled.items()},
                "suppressed": self.quay.suppressed, "dropped_retries": self.quay.dropped_retries,
                "abandoned": self.quay.scheduled,
                "retry_after": self.quay.policy.retry_after,
                "disable_after": self.quay.policy.disable_after}


async def run(url: str, plan: Plan, rate: float, count: int, duration: float,
              stop_file: Path | None, out_path: Path, quay: QuayPolicy | None = None,
              pad_tags: int = 0) -> int:
    _check_loopback(url)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    sent = 0
    with out_path.open("ab") as out:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            sender = Sender(http, url, plan, out, Notifications(quay) if quay else None,
                            pad_tags)
            start = time.monotonic()
            while sent < count:
                now = time.monotonic()
                if now - start >= duration or _stopped(stop_file):
                    break
                sender.retries(now)
                due = start + sent / rate
                if due > now:
                    wake = min(due, sender.next_retry() or due, now + 0.2)
                    await asyncio.sleep(max(0.0, wake - now))
                    continue
                sender.push(sent)
                sent += 1
            while sender.tasks:
                await asyncio.gather(*list(sender.tasks))
            summary = sender.summary()
            if summary:
                out.write(orjson.dumps({"summary": summary}) + b"\n")
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
    parser.add_argument("--quay", action="store_true",
                        help="retry and disable as Quay does (see the module's doc)")
    parser.add_argument("--retry-after", type=float, default=QuayPolicy().retry_after)
    parser.add_argument("--disable-after", type=int, default=QuayPolicy().disable_after)
    parser.add_argument("--pad-tags", type=int, default=0)
    args = parser.parse_args()
    plan = Plan(**orjson.loads(args.plan))
    quay = QuayPolicy(args.retry_after, args.disable_after) if args.quay else None
    sent = asyncio.run(run(args.url, plan, args.rate, args.count, min(args.duration, 900.0),
                           args.stop_file, args.out, quay, args.pad_tags))
    print(f"loadgen: {sent} pushes sent", flush=True)


if __name__ == "__main__":
    main()
