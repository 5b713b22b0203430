"""The aggregated Event recorder: one Event per (object, reason, type), writes capped."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pushrelay.infra.kube import events as events_module
from pushrelay.infra.kube.errors import Action, KubeError
from pushrelay.infra.kube.events import EventRecorder, ObjectRef
from pushrelay.infra.kube.resources import WAREHOUSE


class FakeApi:
    """Records the writes the recorder makes instead of sending them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.posts: list[dict[str, Any]] = []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.fail: KubeError | None = None
        monkeypatch.setattr(events_module, "request_json", self._post)
        monkeypatch.setattr(events_module, "merge_patch", self._patch)

    async def _post(self, _api: Any, _method: str, _path: str, *, body: Any) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.posts.append(body)
        return body

    async def _patch(self, _api: Any, _resource: Any, name: str, patch: dict[str, Any],
                     namespace: str) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.patches.append((name, patch))
        return patch


def warehouse(name: str) -> ObjectRef:
    return ObjectRef(WAREHOUSE, "ns", name, uid=f"uid-{name}")


def recorder(**options: Any) -> EventRecorder:
    return EventRecorder(cast(Any, None), "test", **options)


async def test_many_occurrences_with_different_messages_are_one_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi(monkeypatch)
    rec = recorder()
    for i in range(1000):
        rec.record(warehouse("app"), "Refreshed", f"Refreshed for push of v{i}", series=True)
    await rec.flush()
    (post,) = api.posts
    assert post["count"] == 1000 and post["message"] == "Refreshed for push of v999"
    assert post["involvedObject"]["uid"] == "uid-app" and post["reason"] == "Refreshed"
    assert rec.pending == 0 and rec.writes == 1
    # later occurrences patch the same Event: total count, latest message
    rec.record(warehouse("app"), "Refreshed", "Refreshed for push of v1000", series=True)
    await rec.flush()
    ((name, patch),) = api.patches
    assert name == post["metadata"]["name"]
    assert patch["count"] == 1001 and patch["message"] == "Refreshed for push of v1000"


async def test_outside_a_series_distinct_messages_are_distinct_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi(monkeypatch)
    rec = recorder()
    for _ in range(3):
        rec.record(warehouse("app"), "Unserved", "receiver 'a' is not served", "Warning")
        rec.record(warehouse("app"), "Unserved", "receiver 'b' is not served", "Warning")
    await rec.flush()
    assert sorted((p["message"], p["count"]) for p in api.posts) == [
        ("receiver 'a' is not served", 3), ("receiver 'b' is not served", 3)]


async def test_reason_and_type_keep_events_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(monkeypatch)
    rec = recorder()
    rec.record(warehouse("app"), "Refreshed", "ok")
    rec.record(warehouse("app"), "RefreshRejected", "no", "Warning")
    await rec.flush()
    assert {p["reason"] for p in api.posts} == {"Refreshed", "RefreshRejected"}


async def test_writes_per_flush_are_capped_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(monkeypatch)
    rec = recorder(interval=5.0, max_rate=2.0)  # at most 10 writes per flush
    for i in range(25):
        rec.record(warehouse(f"w{i:02d}"), "Refreshed", "first", series=True)
    rec.record(warehouse("w00"), "Refreshed", "again", series=True)  # keeps its place
    await rec.flush()
    assert [p["involvedObject"]["name"] for p in api.posts] == [f"w{i:02d}" for i in range(10)]
    assert api.posts[0]["count"] == 2 and rec.pending == 15
    await rec.flush()
    await rec.flush()
    assert len(api.posts) == 25 and rec.pending == 0


async def test_transient_failure_retries_later_permanent_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi(monkeypatch)
    rec = recorder()
    rec.record(warehouse("a"), "Refreshed", "m")
    api.fail = KubeError(Action.RETRY, "apiserver down", 503)
    await rec.flush()
    assert rec.pending == 1
    api.fail = KubeError(Action.REJECT, "forbidden", 403)
    await rec.flush()
    assert rec.pending == 0 and not api.posts
    api.fail = None
    await rec.flush()
    assert not api.posts


def test_tracking_is_bounded_and_forgets_written_events_first() -> None:
    rec = recorder(max_tracked=4)
    for i in range(4):
        rec.record(warehouse(f"w{i}"), "Refreshed", "m")
    for key in list(rec._due)[:2]:  # as if written
        rec._entries[key].count = 0
        rec._due.pop(key)
    rec.record(warehouse("new"), "Refreshed", "m")
    names = sorted(e.ref.name for e in rec._entries.values())
    assert len(names) <= 4 and "new" in names and {"w2", "w3"} <= set(names)


def test_tracking_defaults_to_what_the_cap_writes_in_ten_minutes() -> None:
    rec = recorder(max_rate=2.0)
    for i in range(1500):
        rec.record(warehouse(f"w{i}"), "Refreshed", "m", series=True)
    assert len(rec._entries) == 1200 and rec.pending == 1200
    assert warehouse("w1499").name in {e.ref.name for e in rec._entries.values()}
