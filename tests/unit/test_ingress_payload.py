"""Quay.io payload validation: every bad body is InvalidBody, never anything else."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.payload import InvalidBody, build_event, parse_push

SAMPLE = {
    "name": "repository", "repository": "mynamespace/repository", "namespace": "mynamespace",
    "docker_url": "quay.io/mynamespace/repository",
    "homepage": "https://quay.io/repository/mynamespace/repository",
    "updated_tags": ["latest"],
}


def body(**changes: Any) -> bytes:
    data = dict(SAMPLE)
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return orjson.dumps(data)


def test_sample_payload() -> None:
    push = parse_push(body())
    assert push.docker_url == "quay.io/mynamespace/repository"
    assert push.tags == ["latest"]
    assert not push.test_notification
    event = build_event(push, project="proj", receiver="r", delivery="d1")
    assert event.scope.project == "proj" and event.receiver == "r"
    assert event.repository == "quay.io/mynamespace/repository"
    assert event.repo_urls == ["quay.io/mynamespace/repository"]
    assert event.tags == ["latest"] and event.delivery == "d1" and event.source == "quay"
    assert event.key == b"quay.io/mynamespace/repository"


def test_quay_test_notification_is_a_normal_push() -> None:
    push = parse_push(body(updated_tags=["latest", "foo"], pruned_image_count=3))
    assert push.tags == ["latest", "foo"] and push.test_notification


@pytest.mark.parametrize(("tags", "expected"), [
    (..., []), (None, []), ([], []), (["a", "", "b", "a"], ["a", "b"]),
])
def test_missing_or_null_tags_accepted(tags: Any, expected: list[str]) -> None:
    assert parse_push(body(updated_tags=tags)).tags == expected


@pytest.mark.parametrize("raw", [
    b"", b"{", b"not json", b"\xff\xfe", b"[]", b"null", b"42", b'"docker_url"',
    body(docker_url=...), body(docker_url=None), body(docker_url=5), body(docker_url=""),
    body(docker_url=["quay.io/a/b"]), body(docker_url="x" * 1025),
    body(updated_tags="latest"), body(updated_tags=[1]), body(updated_tags=[None]),
    body(updated_tags={"a": 1}), body(updated_tags=["x" * 257]),
    body(updated_tags=[str(i) for i in range(10_001)]),
])
def test_invalid_bodies(raw: bytes) -> None:
    with pytest.raises(InvalidBody):
        parse_push(raw)


def _validate(raw: bytes) -> None:
    try:
        push = parse_push(raw)
    except InvalidBody:
        return
    build_event(push, project=None, receiver="r", delivery="d")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    try:
        _validate(raw)
    except InvalidBody:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "docker_url": json_values | st.text(min_size=1, max_size=1024),
    "updated_tags": json_values | st.lists(st.text(max_size=300), max_size=5),
    "pruned_image_count": json_values,
}))
def test_arbitrary_json_never_raises_anything_else(data: dict[str, Any]) -> None:
    try:
        _validate(json.dumps(data).encode())
    except InvalidBody:
        pass
