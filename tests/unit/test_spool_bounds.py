"""The spool's pure parts: its bounds, its state and the degraded note."""

from __future__ import annotations

import pytest

from ingress.spool import SpoolBounds, SpoolState, describe

BOUNDS = SpoolBounds(max_bytes=1000, max_age=60.0)
NOW = 10_000.0


def test_empty_spool_takes_an_event() -> None:
    assert BOUNDS.refusal(SpoolState(0, 0, None), 100, NOW) is None


@pytest.mark.parametrize(("stored", "size", "refused"), [
    (899, 100, False), (900, 100, False), (901, 100, True), (0, 1001, True)])
def test_size_bound_counts_the_incoming_event(stored: int, size: int, refused: bool) -> None:
    refusal = BOUNDS.refusal(SpoolState(3, stored, NOW), size, NOW)
    assert (refusal is not None) is refused
    if refusal is not None:
        assert refusal.reason == "full" and "bytes" in str(refusal)


def test_age_bound_is_the_oldest_undrained_event() -> None:
    assert BOUNDS.refusal(SpoolState(1, 10, NOW - 60), 10, NOW) is None
    refusal = BOUNDS.refusal(SpoolState(1, 10, NOW - 61), 10, NOW)
    assert refusal is not None and refusal.reason == "too_old"
    assert "61 s old" in str(refusal) and "PUSHRELAY_SPOOL_MAX_AGE" in str(refusal)


def test_drained_records_waiting_for_prune_have_no_age() -> None:
    state = SpoolState(0, 500, None)
    assert state.oldest_age(NOW) == 0.0
    assert BOUNDS.refusal(state, 10, NOW) is None


def test_a_clock_step_back_is_no_negative_age() -> None:
    assert SpoolState(1, 1, NOW + 5).oldest_age(NOW) == 0.0


def test_degraded_note() -> None:
    note = describe(SpoolState(120, 4096, NOW - 35.2), "Kafka unavailable (timed out)", NOW)
    assert note == "spooling: Kafka unavailable (timed out); 120 events, oldest 35 s"
    assert describe(SpoolState(1, 10, NOW), "draining into Kafka", NOW) == (
        "spooling: draining into Kafka; 1 event, oldest 0 s")
