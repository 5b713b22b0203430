"""Commit watermarks: commit up to the lowest offset not yet satisfied."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from refresher.watermark import Watermarks


def test_nothing_tracked_nothing_to_commit() -> None:
    marks: Watermarks[int] = Watermarks()
    marks.assign(0)
    assert marks.committable(0) is None
    assert marks.to_commit() == {}


def test_commit_stops_at_the_lowest_unsatisfied() -> None:
    marks: Watermarks[int] = Watermarks()
    tickets = [marks.track(0, o) for o in range(10, 15)]
    assert all(t is not None for t in tickets)
    assert marks.committable(0) == 10
    marks.done(tickets[1])  # type: ignore[arg-type]
    marks.done(tickets[3])  # type: ignore[arg-type]
    assert marks.committable(0) == 10
    marks.done(tickets[0])  # type: ignore[arg-type]
    assert marks.committable(0) == 12
    assert marks.outstanding(0) == 2
    for t in tickets:
        marks.done(t)  # type: ignore[arg-type]
    assert marks.committable(0) == 15  # one past the last
    assert marks.outstanding() == 0


def test_partitions_are_independent_and_gaps_allowed() -> None:
    marks: Watermarks[str] = Watermarks()
    a = marks.track("p0", 5)
    b = marks.track("p1", 100)
    c = marks.track("p1", 107)  # compaction or transaction markers leave gaps
    assert a and b and c
    marks.done(b)
    assert marks.to_commit() == {"p0": 5, "p1": 107}
    marks.done(c)
    marks.done(c)  # repeated: ignored
    assert marks.committable("p1") == 108


def test_to_commit_reports_only_moves() -> None:
    marks: Watermarks[int] = Watermarks()
    t = marks.track(0, 0)
    assert t is not None
    assert marks.to_commit() == {0: 0}
    marks.committed({0: 0})
    assert marks.to_commit() == {}
    marks.done(t)
    assert marks.to_commit([0, 1]) == {0: 1}


def test_refetched_offsets_are_skipped() -> None:
    marks: Watermarks[int] = Watermarks()
    assert marks.track(0, 3) is not None
    assert marks.track(0, 3) is None
    assert marks.track(0, 2) is None
    assert marks.outstanding() == 1


def test_revoked_partition_ignores_stale_tickets() -> None:
    marks: Watermarks[int] = Watermarks()
    marks.assign(0)
    old = marks.track(0, 7)
    assert old is not None
    marks.revoke(0)
    assert not marks.owns(old)
    marks.assign(0)  # assigned back: consumed again from the committed offset
    new = marks.track(0, 7)
    assert new is not None and marks.owns(new)
    marks.done(old)  # the old patch finished late: must not satisfy the new copy
    assert marks.committable(0) == 7
    marks.done(new)
    assert marks.committable(0) == 8


@given(st.integers(1, 200), st.randoms(use_true_random=False))
def test_watermark_never_passes_an_unsatisfied_offset(n: int, rnd: random.Random) -> None:
    marks: Watermarks[int] = Watermarks()
    tickets = [marks.track(0, o * 2) for o in range(n)]
    order = list(range(n))
    rnd.shuffle(order)
    done: set[int] = set()
    for i in order:
        marks.done(tickets[i])  # type: ignore[arg-type]
        done.add(i * 2)
        mark = marks.committable(0)
        assert mark is not None
        assert all(o in done for o in range(0, mark, 2))  # everything below is satisfied
        assert mark == 2 * n - 1 or mark not in done  # and it stops at the first that is not
