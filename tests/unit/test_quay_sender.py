"""The Quay-like sender's state machine (tests/faults/quay.py), on a fake clock."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.faults import loadgen
from tests.faults.plan import Plan
from tests.faults.quay import (
    DISABLE_AFTER,
    RETRY_AFTER,
    Attempt,
    Notifications,
    QuayPolicy,
    ok_status,
)

REPO = "quay.io/faults/app-0"
OTHER = "quay.io/faults/app-1"


def test_defaults_are_quays() -> None:
    assert (RETRY_AFTER, DISABLE_AFTER) == (30.0, 3)
    assert QuayPolicy() == QuayPolicy(30.0, 3)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_a_success(status: int) -> None:
    assert ok_status(status)


@pytest.mark.parametrize("status", [None, 199, 301, 400, 404, 429, 500, 503])
def test_anything_else_is_a_failure(status: int | None) -> None:
    assert not ok_status(status)


def test_a_failure_is_retried_after_the_fixed_delay() -> None:
    quay = Notifications()
    first = quay.push(7, REPO)
    assert first == Attempt(7, 0, REPO)
    retry = quay.outcome(first, ok=False, now=100.0)
    assert retry == Attempt(7, 1, REPO)
    assert quay.next_due() == 130.0
    assert quay.due(129.9) == []
    assert quay.due(130.0) == [retry]
    assert quay.due(1000.0) == []  # handed out once


def test_three_consecutive_failures_disable_the_notification() -> None:
    quay = Notifications()
    attempt = quay.push(0, REPO)
    assert attempt is not None
    clock = 0.0
    for n in range(1, 3):
        retry = quay.outcome(attempt, ok=False, now=clock)
        assert retry is not None and retry.attempt == n
        clock += 30.0
        assert quay.due(clock) == [retry]
        attempt = retry
    assert quay.outcome(attempt, ok=False, now=clock) is None  # the third: disabled
    assert quay.disabled == {REPO: 60.0}
    assert quay.push(1, REPO) is None and quay.suppressed == 1
    assert quay.push(2, OTHER) == Attempt(2, 0, OTHER)  # per repository


def test_a_success_resets_the_count() -> None:
    quay = Notifications()
    a, b, c, d = (quay.push(p, REPO) for p in range(4))
    assert a and b and c and d
    quay.outcome(a, ok=False, now=0.0)
    quay.outcome(b, ok=False, now=0.1)
    quay.outcome(c, ok=True, now=0.2)
    quay.outcome(d, ok=False, now=0.3)  # one failure since the success
    assert quay.enabled(REPO)
    assert [r.p for r in quay.due(31.0)] == [0, 1, 3]


def test_failures_of_different_pushes_count_together() -> None:
    """Consecutive means per notification, whichever events the deliveries carry."""
    quay = Notifications()
    attempts = [quay.push(p, REPO) for p in range(3)]
    for t, attempt in enumerate(attempts):
        assert attempt is not None
        quay.outcome(attempt, ok=False, now=float(t))
    assert not quay.enabled(REPO)


def test_retries_of_a_disabled_notification_are_dropped() -> None:
    quay = Notifications()
    attempts = [quay.push(p, REPO) for p in range(3)]
    assert all(attempts)
    quay.outcome(attempts[0], ok=False, now=0.0)  # retry due at 30
    quay.outcome(attempts[1], ok=False, now=1.0)  # retry due at 31
    quay.outcome(attempts[2], ok=False, now=2.0)  # disabled
    assert quay.scheduled == 2
    assert quay.due(100.0) == []
    assert quay.dropped_retries == 2 and quay.scheduled == 0


def test_an_answer_after_disabling_changes_nothing() -> None:
    quay = Notifications(QuayPolicy(retry_after=5.0, disable_after=1))
    a, b = quay.push(0, REPO), quay.push(1, REPO)
    assert a and b
    assert quay.outcome(a, ok=False, now=0.0) is None
    assert quay.outcome(b, ok=True, now=0.5) is None  # in flight when it was disabled
    assert not quay.enabled(REPO)


def test_a_shortened_retry_keeps_the_rule() -> None:
    quay = Notifications(QuayPolicy(retry_after=2.0))
    attempt = quay.push(0, REPO)
    assert attempt is not None
    retry = quay.outcome(attempt, ok=False, now=10.0)
    assert quay.next_due() == 12.0 and quay.due(12.0) == [retry]


@pytest.mark.parametrize("policy", [(-1.0, 3), (30.0, 0)])
def test_bad_policies_are_refused(policy: tuple[float, int]) -> None:
    with pytest.raises(ValueError):
        QuayPolicy(*policy)


async def test_the_load_generator_delivers_as_quay(tmp_path: Path) -> None:
    """The sender wired into the load generator, against a loopback server answering
    503 for one repository and 202 for the other (retry shortened to 0.05 s)."""
    from aiohttp import web

    seen: list[tuple[str, str]] = []

    async def receive(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        seen.append((body["docker_url"], body["updated_tags"][0]))
        if body["docker_url"].endswith("app-0"):
            return web.json_response({"error": "unavailable"}, status=503,
                                     headers={"Retry-After": "30"})
        return web.json_response({"msg": "accepted", "delivery": "d"}, status=202)

    app = web.Application()
    app.router.add_post("/quay/x", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    out = tmp_path / "pushes.jsonl"
    try:
        sent = await loadgen.run(f"http://127.0.0.1:{port}/quay/x", Plan(repos=2, unique=2),
                                 rate=40.0, count=40, duration=60.0, stop_file=None,
                                 out_path=out, quay=QuayPolicy(retry_after=0.05))
    finally:
        await runner.cleanup()
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    summary = lines[-1]["summary"]
    attempts = lines[:-1]
    assert sent == 40
    assert list(summary["disabled"]) == ["quay.io/faults/app-0"]
    app0 = [a for a in attempts if a["p"] % 2 == 0]  # in the order the answers came
    assert all(a["status"] == 503 for a in app0)
    assert [a.get("disabled", False) for a in app0][:3] == [False, False, True]
    assert [a["retry"] for a in app0][:2] == [True, True]
    assert summary["suppressed"] + len({a["p"] for a in app0}) == 20  # each sent or counted
    assert all(a["status"] == 202 for a in attempts if a["p"] % 2 == 1)
    assert len([a for a in attempts if a["p"] % 2 == 1]) == 20
