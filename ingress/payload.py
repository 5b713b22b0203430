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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from pushrelay.core.events import PushEvent, Scope
from pushrelay.core.normalize import repo_urls

MAX_DOCKER_URL = 1024
MAX_TAGS = 10_000
MAX_TAG = 256
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


def build_event(push: QuayPush, *, project: str | None, receiver: str,
                delivery: str) -> PushEvent:
    """The push event for Kafka; :class:`InvalidBody` when the model refuses it."""
    try:
        return PushEvent(
            source="quay", scope=Scope(project=project), receiver=receiver,
            repository=push.docker_url, repo_urls=repo_urls(push.docker_url),
            tags=push.tags, delivery=delivery,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise InvalidBody(f"invalid {where}: {first['msg']}") from None
