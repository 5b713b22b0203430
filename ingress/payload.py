"""The Quay.io "Push to Repository" payload: validated, then turned into a push event.

Decisions (docs/contracts.md, "Ingress HTTP", is the contract; where it is silent
we follow Kargo):

* The body must be a JSON object with a string ``docker_url`` of 1 to 1024
  characters (any string, as in Kargo: one that does not parse as a repository
  is passed on as it is and simply matches nothing).
* ``updated_tags`` missing or ``null`` is accepted as "no tags", and so are
  ``[]`` and a list of only empty strings (empty strings are dropped and
  duplicates removed, as Kargo does); the router then refreshes every
  subscriber in scope, as Kargo does. Anything else that is not a list of
  strings is a 400, as are more than 10,000 tags or a tag longer than 256
  characters.
* Quay's "Test Notification" (``updated_tags: ["latest", "foo"]``,
  ``pruned_image_count: 3``) is an ordinary push; it is only flagged so that
  the delivery record can say so.
* Other fields are ignored; the Content-Type is not checked (Kargo does not).

The push event is built without the pydantic model on the hot path
(:class:`IngressEvent`): the payload checks above already enforce what
:class:`~pushrelay.core.events.PushEvent` would, the one constraint they do not
imply (each normalized repository URL 1 to 4,096 characters) is checked here,
and any event that fails it is built by the model, so its error is the model's.
Measured (issue 16): model validation + ``model_dump_json`` cost ~27 us per push,
the dataclass + ``orjson.dumps`` ~4 us; the bytes are identical
(tests/unit/test_ingress_event.py compares them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from pushrelay.core.events import PUSH_SCHEMA, PushEvent, Scope, encode, new_id, now
from pushrelay.core.normalize import repo_urls

MAX_DOCKER_URL = 1024
MAX_TAGS = 10_000
MAX_TAG = 256
#: PushEvent's bound on each of its ``repo_urls`` (``NonEmpty``).
MAX_REPO_URL = 4096
TEST_NOTIFICATION_TAGS = ("latest", "foo")
TEST_NOTIFICATION_PRUNED = 3


class InvalidBody(ValueError):
    """The request body is not a usable Quay.io push payload (a 400)."""


@dataclass(frozen=True)
class QuayPush:
    docker_url: str
    tags: list[str]
    test_notification: bool = False


def parse_push(body: bytes) -> QuayPush:
    """Validate a request body; raise :class:`InvalidBody` with a short reason."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidBody("malformed JSON") from None
    if not isinstance(data, dict):
        raise InvalidBody("not a JSON object")
    docker_url = data.get("docker_url")
    if not isinstance(docker_url, str) or not 1 <= len(docker_url) <= MAX_DOCKER_URL:
        raise InvalidBody(f"docker_url is not a string of 1 to {MAX_DOCKER_URL} characters")
    raw_tags = data.get("updated_tags")
    if raw_tags is None:
        raw_tags = []
    if not isinstance(raw_tags, list) or not all(isinstance(t, str) for t in raw_tags):
        raise InvalidBody("updated_tags is not a list of strings")
    if len(raw_tags) > MAX_TAGS or any(len(t) > MAX_TAG for t in raw_tags):
        raise InvalidBody(f"more than {MAX_TAGS} tags or a tag over {MAX_TAG} characters")
    tags = list(dict.fromkeys(t for t in raw_tags if t))
    test = (tuple(raw_tags) == TEST_NOTIFICATION_TAGS
            and data.get("pruned_image_count") == TEST_NOTIFICATION_PRUNED)
    return QuayPush(docker_url, tags, test)


class EventScope(NamedTuple):
    """The event's ``scope`` (:class:`~pushrelay.core.events.Scope`'s one field)."""

    project: str | None


@dataclass(frozen=True, slots=True)
class IngressEvent:
    """A push event as the ingress publishes it: PushEvent's fields, already
    validated, and :attr:`value`, its wire form, byte-identical to
    ``encode(PushEvent(...))`` of the same fields (field order, ``Z`` times,
    escapes). The router decodes it with the model as any other push event."""

    id: str
    received_at: datetime
    scope: EventScope
    receiver: str
    repository: str
    repo_urls: list[str]
    tags: list[str]
    delivery: str
    value: bytes = field(repr=False)
    source: str = "quay"

    @property
    def key(self) -> bytes:
        return self.repo_urls[0].encode()


#: What the publish path takes: the ingress's own events, or any PushEvent
#: (the spool and its tests build the model).
OutgoingEvent = IngressEvent | PushEvent


def encoded(event: OutgoingEvent) -> bytes:
    """The wire form of ``event`` (an :class:`IngressEvent` carries its own)."""
    return event.value if isinstance(event, IngressEvent) else encode(event)


def build_event(push: QuayPush, *, project: str | None, receiver: str,
                delivery: str) -> IngressEvent:
    """The push event for Kafka; :class:`InvalidBody` when the model would refuse it."""
    urls = repo_urls(push.docker_url)
    if not all(0 < len(url) <= MAX_REPO_URL for url in urls):
        raise _model_error(push, urls, project=project, receiver=receiver, delivery=delivery)
    event_id, received_at = new_id(), now()
    value = orjson.dumps({
        "schema": PUSH_SCHEMA, "id": event_id, "source": "quay", "received_at": received_at,
        "scope": {"project": project}, "receiver": receiver, "repository": push.docker_url,
        "repo_urls": urls, "tags": push.tags, "delivery": delivery,
    }, option=orjson.OPT_UTC_Z)
    return IngressEvent(event_id, received_at, EventScope(project), receiver, push.docker_url,
                        urls, push.tags, delivery, value)


def _model_error(push: QuayPush, urls: list[str], *, project: str | None, receiver: str,
                 delivery: str) -> InvalidBody:
    """The model's own error for an event it refuses, as :class:`InvalidBody`."""
    try:
        PushEvent(source="quay", scope=Scope(project=project), receiver=receiver,
                  repository=push.docker_url, repo_urls=urls, tags=push.tags,
                  delivery=delivery)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        return InvalidBody(f"invalid {where}: {first['msg']}")
    return InvalidBody(f"invalid repo_urls: not 1 to {MAX_REPO_URL} characters each")
