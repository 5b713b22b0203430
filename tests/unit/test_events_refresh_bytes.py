"""encode_refresh writes exactly what encode(RefreshRequest(...)) writes (the
router's fast path must not change the wire format other consumers read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pushrelay.core.events import decode_refresh, encode, encode_refresh

TIMES = [
    None,
    datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC),
    datetime(2026, 12, 2, 1, 2, 3, 120000, tzinfo=UTC),
    datetime(2026, 12, 2, 1, 2, 3, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(2026, 12, 2, 1, 2, 3, 999999),  # naive, as a foreign producer may send
]


@pytest.mark.parametrize("received_at", TIMES)
@pytest.mark.parametrize("delivery", [None, "d-1"])
def test_same_bytes_as_the_model(received_at: datetime | None, delivery: str | None) -> None:
    value, key = encode_refresh(
        "ns-é", "w\"1", event="e1", repo_url="quay.io/a/b", tags=["v1", "ü"],
        delivery=delivery, received_at=received_at)
    request = decode_refresh(value)  # valid, and every field as given
    assert (request.warehouse.namespace, request.warehouse.name) == ("ns-é", "w\"1")
    assert request.cause.tags == ["v1", "ü"] and request.cause.delivery == delivery
    assert request.cause.received_at == received_at
    assert encode(request) == value
    assert key == request.key
