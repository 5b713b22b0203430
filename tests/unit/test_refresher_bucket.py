"""The global token bucket on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from refresher.bucket import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_burst_then_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0, 0, 0, 0, 0]
    waits = [bucket.reserve() for _ in range(3)]
    assert waits == pytest.approx([0.1, 0.2, 0.3])  # FIFO: each later by 1/rate


def test_refill_is_capped_at_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock)
    for _ in range(5):
        bucket.reserve()
    clock.now = 0.25
    assert bucket.available() == pytest.approx(2.5)
    clock.now = 100.0
    assert bucket.available() == 5


def test_refund() -> None:
    bucket = TokenBucket(1, 2, clock=FakeClock())
    bucket.reserve()
    bucket.refund()
    bucket.refund()  # never above burst
    assert bucket.available() == 2


def test_pause_defers_and_forfeits_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 50, clock=clock)
    bucket.pause(2.0)
    assert bucket.reserve() == pytest.approx(2.1)  # at the pause end, then at rate
    assert bucket.reserve() == pytest.approx(2.2)
    clock.now = 1.0
    bucket.pause(0.5)  # a shorter pause inside a longer one changes nothing
    assert bucket.reserve() == pytest.approx(1.0 + 0.3)
    clock.now = 3.0
    assert bucket.available() == pytest.approx(10 * 1.0 - 3)  # accrued only after 2.0


async def test_acquire_sleeps_the_reserved_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4, 2, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await bucket.acquire()
    assert clock.sleeps == pytest.approx([0.25] * 8)
    assert clock.now == pytest.approx(2.0)  # (10 - burst) / rate


async def test_sustained_rate_over_a_long_run() -> None:
    clock = FakeClock()
    bucket = TokenBucket(20, 50, clock=clock, sleep=clock.sleep)
    for _ in range(1050):
        await bucket.acquire()
    assert clock.now == pytest.approx(1000 / 20)


async def test_cancelled_waiter_returns_its_token() -> None:
    clock = FakeClock()
    gate = asyncio.Event()

    async def blocked_sleep(_: float) -> None:
        await gate.wait()

    bucket = TokenBucket(1, 1, clock=clock, sleep=blocked_sleep)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    assert bucket.available() == -1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bucket.available() == 0


def test_invalid() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)
