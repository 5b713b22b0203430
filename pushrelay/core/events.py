"""The event contract on Kafka (docs/contracts.md, "Events"): typed models, JSON at the edge.

Producers build models and call :func:`encode`; consumers call a ``decode_*``
function which returns a model or raises :class:`InvalidEvent` with a reason fit
for a dead letter. Nothing else in pushrelay touches raw JSON of events.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

PUSH_SCHEMA: Final = "pushrelay.push/v1"
REFRESH_SCHEMA: Final = "pushrelay.refresh/v1"
DEAD_LETTER_SCHEMA: Final = "pushrelay.dead-letter/v1"
DELIVERY_SCHEMA: Final = "pushrelay.delivery/v1"

#: Largest message a consumer will even try to decode.
MAX_EVENT_BYTES = 1024 * 1024

NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """128 random bits as 32 lowercase hex digits (a fifth of the cost of uuid4().hex)."""
    return os.urandom(16).hex()


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Scope(_Model):
    project: str | None = Field(
        None, description="project namespace; null means every namespace"
    )


class PushEvent(_Model):
    """A repository push: something new may be available for these tags."""

    schema_: Literal["pushrelay.push/v1"] = Field(PUSH_SCHEMA, alias="schema")
    id: NonEmpty = Field(default_factory=new_id)
    source: NonEmpty = Field("quay", description='"quay" or the name of another producer')
    received_at: datetime = Field(default_factory=now)
    scope: Scope = Field(default_factory=Scope)
    receiver: str | None = None
    repository: str = Field(description="the raw repository as pushed (Quay docker_url)")
    repo_urls: list[NonEmpty] = Field(min_length=1, description="normalized repository URLs")
    tags: list[Tag] = Field(max_length=10_000)
    delivery: str | None = None

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @property
    def key(self) -> bytes:
        return self.repo_urls[0].encode()


class WarehouseRef(_Model):
    namespace: NonEmpty
    name: NonEmpty

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Cause(_Model):
    event: NonEmpty
    repo_url: NonEmpty
    tags: list[Tag]
    delivery: str | None = None
    received_at: datetime | None = Field(
        None, description="when the push was received (its push event's received_at)"
    )


class RefreshRequest(_Model):
    """Refresh this Warehouse because of that push."""

    schema_: Literal["pushrelay.refresh/v1"] = Field(REFRESH_SCHEMA, alias="schema")
    id: NonEmpty = Field(default_factory=new_id)
    warehouse: WarehouseRef
    cause: Cause
    requested_at: datetime = Field(default_factory=now)

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @property
    def key(self) -> bytes:
        return str(self.warehouse).encode()


class DeadLetter(_Model):
    """A message no stage could act on, kept with the reason."""

    schema_: Literal["pushrelay.dead-letter/v1"] = Field(DEAD_LETTER_SCHEMA, alias="schema")
    id: NonEmpty = Field(default_factory=new_id)
    stage: NonEmpty
    reason: NonEmpty
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    payload: str = Field("", description="the original message, truncated, as text")
    at: datetime = Field(default_factory=now)

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class InvalidEvent(ValueError):
    """A message that is not a valid event; ``reason`` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(by_alias=True).encode()


#: orjson's UTC datetimes end in ``Z`` as pydantic's do (every other offset and
#: naive datetimes are written alike too): the same bytes as :func:`encode`.
_ORJSON_OPTIONS: Final = orjson.OPT_UTC_Z


def encode_refresh(namespace: str, name: str, *, event: str, repo_url: str,
                   tags: list[str], delivery: str | None,
                   received_at: datetime | None) -> tuple[bytes, bytes]:
    """A new refresh request as ``(value, key)``: the bytes :func:`encode` gives for
    ``RefreshRequest(warehouse=WarehouseRef(namespace, name), cause=Cause(...))``
    (fields in the same order, datetimes written alike; tested byte for byte).

    No validation and no model: every argument comes from a decoded push event
    or the API server, so it is valid already. The router's hot path, one call
    per matched Warehouse (measured in one process: 3 µs instead of 38 µs
    for three ``model_construct`` and a ``model_dump_json``; ``model_construct``
    is pure Python, slower than validating).
    """
    value = orjson.dumps({
        "schema": REFRESH_SCHEMA, "id": new_id(),
        "warehouse": {"namespace": namespace, "name": name},
        "cause": {"event": event, "repo_url": repo_url, "tags": tags,
                  "delivery": delivery, "received_at": received_at},
        "requested_at": now(),
    }, option=_ORJSON_OPTIONS)
    return value, f"{namespace}/{name}".encode()


def _decode(raw: bytes | None, model: type[M], schema: str) -> M:
    if raw is None:
        raise InvalidEvent("empty message")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"message of {len(raw)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent("not a JSON object")
    found = data.get("schema")
    if found != schema:
        raise InvalidEvent(f"unknown schema {str(found)[:64]!r}, expected {schema!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise InvalidEvent(f"invalid {where}: {first['msg']}") from None


def decode_push(raw: bytes | None) -> PushEvent:
    return _decode(raw, PushEvent, PUSH_SCHEMA)


def decode_refresh(raw: bytes | None) -> RefreshRequest:
    return _decode(raw, RefreshRequest, REFRESH_SCHEMA)


def decode_dead_letter(raw: bytes | None) -> DeadLetter:
    return _decode(raw, DeadLetter, DEAD_LETTER_SCHEMA)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema documents shipped in ``schemas/`` for other producers."""
    out: dict[str, dict[str, Any]] = {}
    for name, model, schema_id in (
        ("push-event", PushEvent, PUSH_SCHEMA),
        ("refresh-request", RefreshRequest, REFRESH_SCHEMA),
        ("dead-letter", DeadLetter, DEAD_LETTER_SCHEMA),
    ):
        doc = model.model_json_schema(by_alias=True, mode="validation")
        doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        doc["$id"] = f"https://pushrelay.dev/schemas/{name}.json"
        doc["description"] = f"{(model.__doc__ or '').strip()} Schema id {schema_id!r}."
        out[name] = doc
    return out
