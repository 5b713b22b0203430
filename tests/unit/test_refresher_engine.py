"""The scheduler with a fake Kubernetes: coalescing, budget, retries, outcomes, stop.

These run on the real event loop with short intervals and poll for results;
the timing rules themselves are covered on a fake clock in the coalescer tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from pushrelay.core.events import Cause, DeadLetter, RefreshRequest, WarehouseRef
from pushrelay.infra import metrics
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.kube.errors import translate
from refresher.bucket import TokenBucket
from refresher.engine import Engine, Item
from refresher.patcher import Patched, Stamper
from refresher.report import Reporter, event_message
from refresher.watermark import Watermarks


async def eventually(predicate: Callable[[], Any], within: float = 5.0) -> Any:
    async with asyncio.timeout(within):
        while True:
            if value := predicate():
                return value
            await asyncio.sleep(0.005)


def api_error(status: int, retry_after: str | None = None) -> Exception:
    exc = ApiException(status=status, reason="scripted")
    exc.headers = {"Retry-After": retry_after} if retry_after else {}  # type: ignore[assignment]
    return translate(exc)


def retried_429() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "pushrelay_refresher_retried_total", {"reason": "429"})
    return value or 0.0


class FakeKube:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.errors: dict[str, list[Exception]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.stamper = Stamper()

    async def refresh(self, ref: WarehouseRef) -> Patched:
        self.calls.append((str(ref), time.monotonic()))
        gate = self.gates.get(str(ref))
        if gate is not None:
            await gate.wait()
        script = self.errors.get(str(ref))
        if script:
            raise script.pop(0)
        return Patched(self.stamper.next(), "uid", "1")

    def count(self, ref: str) -> int:
        return sum(1 for name, _ in self.calls if name == ref)


class Harness:
    def __init__(self, interval: float = 0.2, qps: float = 1000, burst: int = 1000,
                 fail_dead_letters: int = 0) -> None:
        self.kube = FakeKube()
        self.marks: Watermarks[int] = Watermarks()
        self.letters: list[DeadLetter] = []
        self._fail_dead_letters = fail_dead_letters
        self.reporter = Reporter(self.marks, recorder=None, dead_letter=self._send)
        self.bucket = TokenBucket(qps, burst)
        self.engine = Engine(refresh=self.kube.refresh, sink=self.reporter, interval=interval,
                             bucket=self.bucket, backoff=Backoff(base=0.02, max_delay=0.1))
        self.offset = 0
        self.task = self.engine.start()

    async def _send(self, letter: DeadLetter) -> None:
        if self._fail_dead_letters > 0:
            self._fail_dead_letters -= 1
            raise ConnectionError("kafka down")
        self.letters.append(letter)

    def submit(self, ref: str, partition: int = 0, delivery: str = "d") -> None:
        ns, name = ref.split("/")
        request = RefreshRequest(
            warehouse=WarehouseRef(namespace=ns, name=name),
            cause=Cause(event="e", repo_url="quay.io/acme/app", tags=["v1"], delivery=delivery),
        )
        ticket = self.marks.track(partition, self.offset)
        self.offset += 1
        self.engine.submit(Item(request, ticket, b"{}", ref.encode()))

    def settled(self) -> bool:
        return self.marks.outstanding() == 0

    async def close(self) -> None:
        await self.engine.stop(drain_timeout=1.0)


@pytest.fixture
async def h() -> Any:
    harness = Harness()
    yield harness
    await harness.close()


async def test_leading_patch_then_one_trailing_patch(h: Harness) -> None:
    h.kube.gates["ns/a"] = gate = asyncio.Event()
    h.submit("ns/a")
    await eventually(lambda: h.kube.count("ns/a") == 1)
    for _ in range(99):  # all arrive while the leading patch is in flight
        h.submit("ns/a")
    gate.set()
    await eventually(h.settled)
    assert h.kube.count("ns/a") == 2
    (_, first), (_, second) = h.kube.calls
    assert second - first >= 0.2 - 0.01
    assert h.reporter.patched == 2
    assert h.marks.committable(0) == 100


async def test_burst_before_the_first_patch_costs_one(h: Harness) -> None:
    for _ in range(500):
        h.submit("ns/a")
    await eventually(h.settled)
    assert h.kube.count("ns/a") == 1


async def test_many_warehouses_at_most_two_patches_each() -> None:
    # A window far longer than the submission loop, however loaded the machine.
    h = Harness(interval=2.0)
    try:
        await _submit_burst(h)
    finally:
        await h.close()


async def _submit_burst(h: Harness) -> None:
    for i in range(1000):
        h.submit(f"ns/w{i % 50}", partition=i % 3)
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the scheduler start leading patches
    await eventually(h.settled, within=20)
    assert len({name for name, _ in h.kube.calls}) == 50
    assert len(h.kube.calls) <= 100


async def test_a_warehouse_in_backoff_does_not_block_others(h: Harness) -> None:
    h.kube.errors["ns/slow"] = [api_error(503) for _ in range(3)]
    h.submit("ns/slow")
    h.submit("ns/fast")
    await eventually(lambda: h.kube.count("ns/fast") == 1)
    await eventually(h.settled)
    assert h.kube.count("ns/slow") == 4


async def test_429_retry_after_pauses_the_budget_and_nothing_is_lost(h: Harness) -> None:
    before = retried_429()
    h.kube.errors["ns/a"] = [api_error(429, "0.3")]
    h.submit("ns/a")
    await eventually(lambda: h.kube.count("ns/a") == 1)
    start = time.monotonic()
    h.submit("ns/b")  # must wait for the pause too
    await eventually(h.settled)
    assert retried_429() == before + 1
    assert [t for n, t in h.kube.calls if n == "ns/b"][0] - start >= 0.25
    assert h.kube.count("ns/a") == 2


async def test_404_drops_and_403_dead_letters(h: Harness) -> None:
    h.kube.errors["ns/gone"] = [api_error(404)]
    h.kube.errors["ns/forbidden"] = [api_error(403)]
    h.submit("ns/gone")
    h.submit("ns/forbidden", delivery="d1")
    await eventually(h.settled)
    assert h.reporter.dropped_requests == 1
    assert len(h.letters) == 1
    letter = h.letters[0]
    assert letter.stage == "refresher" and "403" in letter.reason and letter.offset == 1
    assert letter.key == "ns/forbidden"


async def test_dead_letter_failure_keeps_the_request_until_it_is_sent() -> None:
    h = Harness(fail_dead_letters=2)
    try:
        h.kube.errors["ns/x"] = [api_error(422) for _ in range(3)]
        h.submit("ns/x")
        await eventually(h.settled)
        assert len(h.letters) == 1
        assert h.kube.count("ns/x") == 3
    finally:
        await h.close()


async def test_requests_of_revoked_partitions_are_not_patched(h: Harness) -> None:
    h.kube.gates["ns/a"] = gate = asyncio.Event()
    h.submit("ns/a", partition=0)
    await eventually(lambda: h.kube.count("ns/a") == 1)
    h.submit("ns/a", partition=0)
    h.marks.revoke(0)
    gate.set()
    # the trailing start takes the item, finds it stale, and patches nothing
    await eventually(lambda: h.engine.in_flight == 0 and h.engine.pending == 0)
    assert h.kube.count("ns/a") == 1


async def test_stop_finishes_in_flight_patches_or_hands_them_back() -> None:
    h = Harness()
    h.kube.gates["ns/stuck"] = asyncio.Event()
    h.submit("ns/stuck")
    await eventually(lambda: h.engine.in_flight == 1)
    assert await h.engine.stop(drain_timeout=0.05) == 1
    assert h.marks.outstanding() == 1  # not satisfied: consumed again after restart
    assert h.task.done()
    assert await h.engine.stop(drain_timeout=0.05) == 0  # idempotent


def test_event_message_names_repo_tags_delivery_newest_first() -> None:
    def cause(delivery: str, tags: list[str]) -> Cause:
        return Cause(event="e", repo_url="quay.io/acme/app", tags=tags, delivery=delivery)

    assert event_message([cause("d1", ["v1"])]) == (
        "Refreshed for push to quay.io/acme/app tags [v1] (delivery d1)")
    many = [cause(f"d{i}", ["v1"]) for i in range(6)] + [cause("d5", ["v1"])]
    text = event_message(many)
    assert text.startswith("Refreshed for push to quay.io/acme/app tags [v1] (delivery d5); ")
    assert text.endswith("; and 3 more pushes")
    assert "(+2 more)" in event_message([cause("d", [f"t{i}" for i in range(7)])])


async def test_a_bug_in_the_patch_path_fails_the_engine_and_dead_letters_nothing(
        h: Harness) -> None:
    """An exception that is not an API error is our bug: never an outcome.

    The scheduler task fails with it (the service watching it crashes and is
    restarted), nothing is dead-lettered, and the request stays unsatisfied, so
    its offset is not committed and it is consumed and patched again after the
    restart (tests/integration/test_refresher_service.py shows the restart)."""
    h.kube.errors["ns/a"] = [TypeError("a bug in our patch code")]
    h.submit("ns/a")
    with pytest.raises(TypeError):
        async with asyncio.timeout(10):
            await asyncio.shield(h.task)
    assert h.letters == [] and h.reporter.dead_lettered == 0
    assert h.marks.outstanding() == 1 and h.marks.committable(0) == 0
