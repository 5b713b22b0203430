"""The Quay-like sender's state machine (tests/faults/quay.py), on a fake clock."""

from __future__ import annotations

import pytest

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
