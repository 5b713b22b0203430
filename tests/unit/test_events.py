"""The event contract: round trips, and every bad message gets a reason."""

from __future__ import annotations

import orjson
import pytest

from pushrelay.core.events import (
    MAX_EVENT_BYTES,
    InvalidEvent,
    PushEvent,
    RefreshRequest,
    decode_push,
    decode_refresh,
    encode,
)


def push(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schema": "pushrelay.push/v1", "id": "e1", "source": "quay",
        "received_at": "2026-01-01T00:00:00Z", "scope": {"project": "p"},
        "receiver": "r", "repository": "quay.io/ns/repo", "repo_urls": ["quay.io/ns/repo"],
        "tags": ["v1"], "delivery": "d1",
    }
    doc.update(overrides)
    return doc


def test_push_event_round_trip() -> None:
    event = PushEvent(repository="quay.io/ns/repo", repo_urls=["quay.io/ns/repo"], tags=["a"])
    assert decode_push(encode(event)) == event
    assert event.key == b"quay.io/ns/repo"
    assert orjson.loads(encode(event))["schema"] == "pushrelay.push/v1"


def test_minimal_producer_event_gets_defaults() -> None:
    event = decode_push(orjson.dumps(
        {"schema": "pushrelay.push/v1", "repository": "r", "repo_urls": ["r"], "tags": []}
    ))
    assert event.scope.project is None and event.id and event.source == "quay"


def test_refresh_request_key_is_namespace_slash_name() -> None:
    request = RefreshRequest.model_validate(
        {"warehouse": {"namespace": "ns", "name": "wh"},
         "cause": {"event": "e", "repo_url": "r", "tags": []}}
    )
    assert request.key == b"ns/wh"
    assert decode_refresh(encode(request)) == request


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty message"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (orjson.dumps(push(schema="pushrelay.push/v2")), "unknown schema"),
        (orjson.dumps({k: v for k, v in push().items() if k != "schema"}), "unknown schema"),
        (orjson.dumps(push(tags="v1")), "invalid tags"),
        (orjson.dumps(push(tags=[1])), "invalid tags.0"),
        (orjson.dumps(push(repo_urls=[])), "invalid repo_urls"),
        (orjson.dumps(push(scope={"project": 3})), "invalid scope.project"),
        (orjson.dumps(push(received_at="yesterday")), "invalid received_at"),
        (b"{" + b" " * MAX_EVENT_BYTES + b"}", "exceeds"),
    ],
)
def test_bad_messages_raise_invalid_event_with_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_push(raw)
    assert reason in caught.value.reason


def test_refresh_decoder_rejects_push_events() -> None:
    with pytest.raises(InvalidEvent, match="unknown schema"):
        decode_refresh(orjson.dumps(push()))


def test_key_partitioner_agrees_with_kafkas_default() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from pushrelay.infra.bus.kafka import KeyPartitioner

    ours, default = KeyPartitioner(cache_size=8), DefaultPartitioner()
    partitions = list(range(6))
    for i in range(200):
        key = f"quay.io/acme/app-{i % 40}".encode()
        assert ours(key, partitions, partitions) == default(key, partitions, partitions)
    assert ours(None, partitions, [3]) == 3
