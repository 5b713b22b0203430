"""The coalescer on a fake clock: leading edge, one trailing patch, in-flight rules."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refresher.coalescer import Coalescer

W = "ns/wh"


def test_first_request_is_due_at_once() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    co.add(W, 1, now=10.0)
    assert co.next_due() == float("-inf")
    assert co.pop_due(10.0) == W
    assert co.in_flight(W)
    assert co.start(W, 10.0) == [1]


def test_burst_within_interval_is_one_leading_and_one_trailing_patch() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    co.add(W, 0, now=0.0)
    assert co.pop_due(0.0) == W
    assert co.start(W, 0.0) == [0]
    co.succeeded(W, now=0.05)
    for i in range(1, 500):  # the rest of the burst, within 1 s
        co.add(W, i, now=i / 500)
    assert co.pop_due(1.0) is None  # not before the window ends
    assert co.next_due() == 2.0
    assert co.pop_due(1.999) is None
    assert co.pop_due(2.0) == W
    assert co.start(W, 2.0) == list(range(1, 500))  # one trailing patch takes them all
    co.succeeded(W, now=2.05)
    assert co.next_due() is None


def test_request_during_flight_needs_a_later_patch() -> None:
    co: Coalescer[str, str] = Coalescer(2.0)
    co.add(W, "a", now=0.0)
    co.pop_due(0.0)
    assert co.start(W, 0.0) == ["a"]
    co.add(W, "b", now=0.5)  # arrives while the first patch is in flight
    assert co.pop_due(0.6) is None  # never a second concurrent patch for a key
    co.succeeded(W, now=3.0)  # a slow patch: finished after the window
    # "b" was not satisfied by the patch that started before it arrived
    assert co.pending(W) == 1
    assert co.pop_due(3.0) == W
    assert co.start(W, 3.0) == ["b"]


def test_requests_arriving_while_claimed_ride_along() -> None:
    co: Coalescer[str, str] = Coalescer(1.0)
    co.add(W, "a", now=0.0)
    assert co.pop_due(0.0) == W  # claimed; now waiting for the write budget
    co.add(W, "b", now=0.3)
    assert co.start(W, 0.4) == ["a", "b"]  # the patch starts after both arrived


def test_request_after_the_window_is_a_new_leading_edge() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    co.add(W, 1, now=0.0)
    co.pop_due(0.0)
    co.start(W, 0.0)
    co.succeeded(W, 0.1)
    co.add(W, 2, now=5.0)
    assert co.pop_due(5.0) == W


def test_window_counts_from_patch_start() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    co.add(W, 1, now=0.0)
    co.pop_due(0.0)
    co.start(W, 1.0)  # waited one second for the budget
    co.succeeded(W, 1.5)
    co.add(W, 2, now=1.6)
    assert co.next_due() == 3.0


def test_failure_hands_requests_back_due_at_retry_time() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    co.add(W, 1, now=0.0)
    co.pop_due(0.0)
    taken = co.start(W, 0.0)
    co.add(W, 2, now=0.1)
    assert co.failed(W, taken, retry_at=0.5) == 1
    assert co.pending(W) == 2
    assert co.pop_due(0.4) is None
    assert co.pop_due(0.5) == W
    taken = co.start(W, 0.5)
    assert taken == [1, 2]  # order kept
    assert co.failed(W, taken, retry_at=1.5) == 2  # consecutive failures counted
    co.pop_due(1.5)
    co.start(W, 1.5)
    co.succeeded(W, 1.6)
    assert co.failures(W) == 0


def test_retry_respects_the_window_of_the_last_good_patch() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    co.add(W, 1, now=0.0)
    co.pop_due(0.0)
    co.start(W, 0.0)
    co.succeeded(W, 0.1)
    co.add(W, 2, now=0.2)
    co.pop_due(2.0)
    taken = co.start(W, 2.0)
    co.failed(W, taken, retry_at=2.1)
    assert co.next_due() == 2.1  # the failed attempt does not move the window
    co.add(W, 3, now=2.05)
    co.pop_due(2.1)
    assert co.start(W, 2.1) == [2, 3]


def test_settled_attempt_paces_the_next_one() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    co.add(W, 1, now=0.0)
    co.pop_due(0.0)
    co.start(W, 0.0)
    co.add(W, 2, now=0.5)
    co.settled(W)  # e.g. 404: the first request is done, the second waits a window
    assert co.next_due() == 2.0


def test_keys_are_independent() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    co.add("a", 1, now=0.0)
    co.pop_due(0.0)
    taken = co.start("a", 0.0)
    co.failed("a", taken, retry_at=30.0)  # "a" in a long backoff
    co.add("b", 2, now=0.1)
    assert co.pop_due(0.1) == "b"


def test_release_returns_a_claim() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    co.add(W, 1, now=0.0)
    assert co.pop_due(0.0) == W
    co.release(W)
    assert not co.in_flight(W)
    assert co.pop_due(0.0) == W


def test_discard_and_prune() -> None:
    co: Coalescer[str, int] = Coalescer(2.0)
    for i in range(6):
        co.add(f"k{i % 2}", i, now=0.0)
    assert sorted(co.discard(lambda t: t % 2 == 0)) == [0, 2, 4]
    assert co.pending_total() == 3
    assert co.pop_due(0.0) == "k1"  # "k0" has nothing left
    assert co.pop_due(0.0) is None
    assert co.start("k1", 0.0) == [1, 3, 5]
    co.succeeded("k1", 0.1)
    assert co.prune(1.0) == 1  # "k0" is idle; "k1" is still inside its window
    assert co.prune(2.0) == 1
    assert len(co) == 0


def test_negative_interval_rejected() -> None:
    with pytest.raises(ValueError):
        Coalescer(-1.0)


# ---- a discrete-event simulation of the scheduler, on a fake clock -------------------


@dataclass
class Sim:
    interval: float
    duration: float  # how long a patch takes
    fail_every: int = 0  # every n-th attempt fails (0: never)
    co: Coalescer[str, tuple[str, int, float]] = field(init=False)
    starts: dict[str, list[float]] = field(default_factory=dict)  # successful patch starts
    satisfied: dict[int, float] = field(default_factory=dict)  # request -> patch start

    def __post_init__(self) -> None:
        self.co = Coalescer(self.interval)

    def run(self, arrivals: list[tuple[float, str]]) -> None:
        events: list[tuple[float, int, Arrive | End]] = []
        seq = itertools.count()
        for i, (t, name) in enumerate(arrivals):
            heapq.heappush(events, (t, next(seq), Arrive(name, i)))
        attempts = 0
        now = 0.0
        while True:
            while (key := self.co.pop_due(now)) is not None:
                taken = self.co.start(key, now)
                attempts += 1
                ok = not (self.fail_every and attempts % self.fail_every == 0)
                heapq.heappush(events, (now + self.duration, next(seq),
                                        End(key, taken, now, ok)))
            due = self.co.next_due()
            if not events and due is None:
                return
            if due is not None and due <= (events[0][0] if events else float("inf")):
                now = max(now, due)
                continue
            now, _, event = heapq.heappop(events)
            if isinstance(event, Arrive):
                self.co.add(event.key, (event.key, event.index, now), now)
            elif event.ok:
                self.co.succeeded(event.key, now)
                self.starts.setdefault(event.key, []).append(event.started)
                for _, i, arrived in event.taken:
                    assert event.started >= arrived
                    self.satisfied[i] = event.started
            else:
                self.co.failed(event.key, event.taken, retry_at=now + 0.3)


@dataclass(frozen=True, order=False)
class Arrive:
    key: str
    index: int


@dataclass(frozen=True, order=False)
class End:
    key: str
    taken: list[tuple[str, int, float]]
    started: float
    ok: bool


def test_sim_500_requests_in_one_second_cost_two_patches() -> None:
    sim = Sim(interval=2.0, duration=0.02)
    sim.run([(i / 500, W) for i in range(500)])
    assert len(sim.starts[W]) == 2
    assert len(sim.satisfied) == 500


def test_sim_50_warehouses_20_requests_each() -> None:
    sim = Sim(interval=2.0, duration=0.05)
    sim.run([(i / 1000, f"wh{i % 50}") for i in range(1000)])
    assert len(sim.satisfied) == 1000
    assert sum(len(v) for v in sim.starts.values()) <= 100


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.floats(0, 20, allow_nan=False), st.sampled_from(["a", "b", "c"])),
        min_size=1, max_size=120,
    ),
    interval=st.floats(0, 3, allow_nan=False),
    duration=st.floats(0.001, 4, allow_nan=False),
    fail_every=st.sampled_from([0, 2, 3, 5]),  # never "always fails"
)
def test_sim_every_request_satisfied_by_a_later_start_and_windows_kept(
    arrivals: list[tuple[float, str]], interval: float, duration: float, fail_every: int,
) -> None:
    sim = Sim(interval=interval, duration=duration, fail_every=fail_every)
    sim.run(sorted(arrivals))
    assert len(sim.satisfied) == len(arrivals)  # nothing lost, each by a later start
    for starts in sim.starts.values():
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        # one patch at a time per key, and never two starts within the interval
        assert all(g >= max(interval, duration) - 1e-9 for g in gaps)
