"""Jittered exponential backoff, honouring Retry-After."""

from __future__ import annotations

import pytest

from pushrelay.infra.backoff import Backoff


def test_caps_grow_exponentially_up_to_max() -> None:
    b = Backoff(base=0.2, factor=2, max_delay=3.0)
    assert [b.cap(n) for n in range(1, 7)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.0, 3.0])
    assert b.cap(10_000) == 3.0  # no overflow


def test_equal_jitter_bounds() -> None:
    low = Backoff(base=1, max_delay=100, rand=lambda: 0.0)
    high = Backoff(base=1, max_delay=100, rand=lambda: 1.0)
    for attempt in range(1, 8):
        assert low.delay(attempt) == pytest.approx(low.cap(attempt) / 2)
        assert high.delay(attempt) == pytest.approx(high.cap(attempt))


def test_jitter_spreads() -> None:
    b = Backoff(base=1, max_delay=8)
    delays = {round(b.delay(4), 6) for _ in range(50)}
    assert len(delays) > 10
    assert all(4 <= d <= 8 for d in delays)


def test_retry_after_is_a_floor() -> None:
    b = Backoff(base=0.1, max_delay=1.0, rand=lambda: 0.5)
    assert b.delay(1, retry_after=5) == 5  # above max_delay: still honoured
    assert b.delay(1, retry_after=0.01) == pytest.approx(0.075)  # below the jitter: jitter
    assert b.delay(1, retry_after=None) == pytest.approx(0.075)
    assert Backoff(retry_after_limit=60).delay(1, retry_after=3600) == 60


def test_invalid() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(factor=0.5)
