"""Folding delivery facts into one row per delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pushrelay.core.deliveries import DeliveryFact, fold, parse_fact

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fact(delivery: str, stage: str, outcome: str, seconds: float = 0, **kw: object) -> DeliveryFact:
    return DeliveryFact.model_validate(
        {"delivery": delivery, "stage": stage, "outcome": outcome,
         "at": T0 + timedelta(seconds=seconds), **kw}
    )


def test_accepted_matched_refreshed() -> None:
    rows = fold([
        fact("d1", "refresher", "refreshed", 2, warehouses=["ns/a"]),
        fact("d1", "ingress", "accepted", 0, receiver="r", repository="quay.io/n/r", tags=["v1"]),
        fact("d1", "router", "matched", 1, warehouses=["ns/a", "ns/b"]),
    ])
    [row] = rows
    assert row.receiver == "r" and row.tags == ["v1"]
    assert row.summary() == "refreshed 1/2"


def test_rejected_and_unmatched() -> None:
    rows = fold([
        fact("d1", "ingress", "rejected", 0, reason="invalid request body"),
        fact("d2", "ingress", "accepted", 5),
        fact("d2", "router", "matched", 6, warehouses=[]),
    ])
    assert [r.delivery for r in rows] == ["d2", "d1"]  # newest first
    assert rows[0].summary() == "matched 0 warehouses"
    assert rows[1].summary() == "rejected: invalid request body"


def test_failed_refresh_keeps_reason() -> None:
    [row] = fold([
        fact("d1", "ingress", "accepted", tags=["v1"]),
        fact("d1", "router", "matched", 1, warehouses=["ns/a"]),
        fact("d1", "refresher", "failed", 2, warehouses=["ns/a"], reason="403 forbidden"),
    ])
    assert row.summary() == "failed 1/1: 403 forbidden"


def test_keys_keep_each_fact_under_compaction() -> None:
    keys = {
        fact("d", "ingress", "accepted").key,
        fact("d", "router", "matched").key,
        fact("d", "refresher", "refreshed", warehouses=["ns/a"]).key,
        fact("d", "refresher", "refreshed", warehouses=["ns/b"]).key,
    }
    assert len(keys) == 4


def test_parse_fact_ignores_garbage() -> None:
    assert parse_fact(b"nope") is None
    assert parse_fact(None) is None


def test_order_of_stage_clocks_does_not_matter() -> None:
    """The router may stamp its fact a millisecond before the ingress stamps its own."""
    [row] = fold([
        fact("d1", "router", "matched", 0, warehouses=[]),
        fact("d1", "ingress", "accepted", 0.001, receiver="r"),
    ])
    assert row.outcome == "matched" and row.summary() == "matched 0 warehouses"


def test_ingress_failure_is_shown_as_failed() -> None:
    [row] = fold([fact("d1", "ingress", "failed", reason="Kafka unavailable")])
    assert row.summary() == "failed: Kafka unavailable"


def test_spooled_then_waiting() -> None:
    [row] = fold([fact("d1", "ingress", "spooled", 0, receiver="r", tags=["v1"],
                       reason="Kafka unavailable: timed out", test_notification=True)])
    assert row.outcome == "spooled"
    assert row.summary() == "spooled (waiting for Kafka)"
    assert row.spooled_seconds is None and row.received_at == T0


def test_spooled_then_forwarded_keeps_when_received() -> None:
    """The forwarder's ``accepted`` fact (same key: compaction keeps it alone) says
    when the push was spooled, so the row keeps its time and shows the wait."""
    spooled = fact("d1", "ingress", "spooled", 0, receiver="r", test_notification=True)
    accepted = fact("d1", "ingress", "accepted", 35.4, receiver="r", spooled_at=T0)
    assert spooled.key == accepted.key
    for facts in ([spooled, accepted], [accepted, spooled], [accepted]):
        [row] = fold(facts)
        assert row.outcome == "accepted" and row.received_at == T0
        assert row.spooled_seconds == 35.4
        assert row.summary() == "accepted (spooled 35 s)"
    assert fold([spooled, accepted])[0].test_notification  # not in the event: kept


def test_spooled_then_refreshed() -> None:
    [row] = fold([
        fact("d1", "ingress", "spooled", 0, tags=["v1"]),
        fact("d1", "ingress", "accepted", 60, spooled_at=T0, tags=["v1"]),
        fact("d1", "router", "matched", 61, warehouses=["ns/a"]),
        fact("d1", "refresher", "refreshed", 62, warehouses=["ns/a"]),
    ])
    assert row.summary() == "refreshed 1/1 (spooled 60 s)"
