"""The ingress's push event (ingress.payload.IngressEvent) against the model.

The ingress builds its events without pydantic (measured: ~27 us -> ~4 us per
push); the router decodes them with :class:`~pushrelay.core.events.PushEvent`.
These tests pin the two together: the bytes are the model's own encoding of
the same fields, and an event the model would refuse is refused with the
model's error.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.payload import InvalidBody, QuayPush, build_event, encoded
from pushrelay.core.events import PushEvent, Scope, decode_push, encode


def model_of(push: QuayPush, project: str | None, receiver: str, delivery: str,
             event_id: str, received_at: datetime) -> PushEvent:
    event = build_event(push, project=project, receiver=receiver, delivery=delivery)
    return PushEvent(id=event_id, received_at=received_at, source="quay",
                     scope=Scope(project=project), receiver=receiver,
                     repository=push.docker_url, repo_urls=event.repo_urls, tags=push.tags,
                     delivery=delivery)


text = st.text(min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(docker_url=text, tags=st.lists(st.text(min_size=1, max_size=20), max_size=5, unique=True),
       project=st.none() | text, receiver=text, delivery=text)
def test_bytes_are_the_models_encoding(docker_url: str, tags: list[str], project: str | None,
                                       receiver: str, delivery: str) -> None:
    push = QuayPush(docker_url, tags)
    try:
        event = build_event(push, project=project, receiver=receiver, delivery=delivery)
    except InvalidBody:
        with pytest.raises(ValueError):  # the model refuses it as well
            model_of(push, project, receiver, delivery, "x", datetime.now(UTC))
        return
    model = PushEvent(id=event.id, received_at=event.received_at, source="quay",
                      scope=Scope(project=project), receiver=receiver,
                      repository=docker_url, repo_urls=event.repo_urls, tags=tags,
                      delivery=delivery)
    assert event.value == encode(model) == encoded(event)
    assert decode_push(event.value) == model
    assert event.key == model.key


@pytest.mark.parametrize("received_at", [
    datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: both omit the fraction
    datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
])
def test_times_are_encoded_as_the_model_does(received_at: datetime) -> None:
    push = QuayPush("quay.io/a/b", ["latest"])
    event = build_event(push, project=None, receiver="r", delivery="d")
    data = orjson.loads(event.value)
    data["received_at"] = received_at
    fast = orjson.dumps(data, option=orjson.OPT_UTC_Z)
    assert fast == encode(PushEvent.model_validate(data))


@pytest.mark.parametrize("docker_url", ["oci://", " "])
def test_a_url_the_model_refuses_gets_the_models_error(docker_url: str) -> None:
    """Its chart form normalizes to "": the model's NonEmpty refuses it."""
    with pytest.raises(InvalidBody, match=r"^invalid repo_urls\.1: String should have at least"):
        build_event(QuayPush(docker_url, []), project=None, receiver="r", delivery="d")


def test_a_spool_or_a_test_may_pass_the_model() -> None:
    model = PushEvent(repository="quay.io/a/b", repo_urls=["quay.io/a/b"], tags=[])
    assert encoded(model) == encode(model)
