"""The shipped JSON Schemas match the models, and validate real events."""

from __future__ import annotations

import jsonschema
import orjson
import pytest

from pushrelay.core.events import PushEvent, RefreshRequest, encode
from pushrelay.core.schemas import SCHEMA_DIR, render


@pytest.mark.parametrize("filename", sorted(render()))
def test_committed_schema_matches_model(filename: str) -> None:
    committed = (SCHEMA_DIR / filename).read_bytes()
    assert committed == render()[filename], (
        f"schemas/{filename} is stale: run `python -m pushrelay.core.schemas`"
    )


def test_push_event_validates_against_its_schema() -> None:
    schema = orjson.loads((SCHEMA_DIR / "push-event.json").read_bytes())
    event = PushEvent(repository="quay.io/ns/repo", repo_urls=["quay.io/ns/repo"], tags=["v1"])
    jsonschema.validate(orjson.loads(encode(event)), schema)


def test_refresh_request_validates_against_its_schema() -> None:
    schema = orjson.loads((SCHEMA_DIR / "refresh-request.json").read_bytes())
    request = RefreshRequest.model_validate(
        {"warehouse": {"namespace": "ns", "name": "wh"},
         "cause": {"event": "e1", "repo_url": "quay.io/ns/repo", "tags": ["v1"]}}
    )
    jsonschema.validate(orjson.loads(encode(request)), schema)


def test_schema_rejects_missing_repo_urls() -> None:
    schema = orjson.loads((SCHEMA_DIR / "push-event.json").read_bytes())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema": "pushrelay.push/v1", "repository": "x", "tags": []}, schema)
