"""The informer's ``unchanged`` filter: a refresh PATCH's MODIFIED event (same
generation, only an annotation and resourceVersion changed) is not handed on."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pushrelay.infra.kube import informer as informer_module
from pushrelay.infra.kube.informer import ChangeKind, Informer, same_generation
from pushrelay.infra.kube.resources import WAREHOUSE
from router.index import trim


def warehouse(version: str, generation: int | None = 1, uid: str = "u1",
              deleting: bool = False, repo: str = "quay.io/a/b") -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "ns", "name": "w", "uid": uid,
                            "resourceVersion": version,
                            "annotations": {"kargo.akuity.io/refresh": version}}
    if generation is not None:
        meta["generation"] = generation
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    return {"metadata": meta, "spec": {"subscriptions": [{"image": {"repoURL": repo}}]},
            "status": {"big": "x" * 100}}


def informer() -> tuple[Informer, list[tuple[ChangeKind, dict[str, Any]]]]:
    seen: list[tuple[ChangeKind, dict[str, Any]]] = []
    inf = Informer(cast(Any, None), WAREHOUSE, lambda kind, obj: seen.append((kind, obj)),
                   transform=trim, unchanged=same_generation)
    return inf, seen


def test_same_generation_is_skipped_but_its_version_is_kept() -> None:
    inf, seen = informer()
    assert inf._apply({"type": "ADDED", "object": warehouse("1")}, "0") == "1"
    assert inf._apply({"type": "MODIFIED", "object": warehouse("2")}, "1") == "2"
    assert [kind for kind, _ in seen] == ["ADDED"]
    assert inf.store[("ns", "w")]["metadata"]["resourceVersion"] == "2"


@pytest.mark.parametrize("changed", [
    warehouse("2", generation=2, repo="quay.io/a/c"),  # a spec change
    warehouse("2", deleting=True),                      # deletion started
    warehouse("2", uid="u2"),                           # deleted and re-created
    warehouse("2", generation=None),                    # no generation to trust
])
def test_every_other_change_is_handed_on(changed: dict[str, Any]) -> None:
    inf, seen = informer()
    inf._apply({"type": "ADDED", "object": warehouse("1")}, "0")
    inf._apply({"type": "MODIFIED", "object": changed}, "1")
    assert [kind for kind, _ in seen] == ["ADDED", "MODIFIED"]
    assert seen[1][1] == trim(changed)
    assert inf.store[("ns", "w")] == trim(changed)


def test_delete_is_always_handed_on() -> None:
    inf, seen = informer()
    inf._apply({"type": "ADDED", "object": warehouse("1")}, "0")
    inf._apply({"type": "DELETED", "object": warehouse("3")}, "1")
    assert [kind for kind, _ in seen] == ["ADDED", "DELETED"] and not inf.store


def test_without_the_filter_every_modification_is_handed_on() -> None:
    seen: list[ChangeKind] = []
    inf = Informer(cast(Any, None), WAREHOUSE, lambda kind, obj: seen.append(kind))
    inf._apply({"type": "ADDED", "object": warehouse("1")}, "0")
    inf._apply({"type": "MODIFIED", "object": warehouse("2")}, "1")
    assert seen == ["ADDED", "MODIFIED"]


async def test_relist_compares_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    inf, seen = informer()
    inf._apply({"type": "ADDED", "object": warehouse("1")}, "0")
    listing = {"metadata": {"resourceVersion": "9"}, "items": [warehouse("5")]}

    async def list_objects(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return listing

    monkeypatch.setattr(informer_module, "list_objects", list_objects)
    assert await inf._relist() == "9"
    assert [kind for kind, _ in seen] == ["ADDED"]
    assert inf.store[("ns", "w")]["metadata"]["resourceVersion"] == "5"
    listing["items"] = [warehouse("6", generation=2)]
    await inf._relist()
    assert [kind for kind, _ in seen] == ["ADDED", "MODIFIED"]


class _Protocol:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


class _Response:
    def __init__(self, protocol: _Protocol | None) -> None:
        self.connection = type("C", (), {"protocol": protocol})() if protocol else None


async def test_a_busy_stream_is_paused_between_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        assert protocol.calls[-1] == "pause"  # paused while the events pile up

    inf = Informer(cast(Any, None), WAREHOUSE, lambda kind, obj: None, coalesce=0.1)
    protocol = _Protocol()
    now = asyncio.get_running_loop().time()
    monkeypatch.setattr(asyncio, "sleep", sleep)
    await inf._let_events_pile_up(_Response(protocol), last=now - 100)  # quiet: read on
    assert protocol.calls == [] and slept == []
    await inf._let_events_pile_up(_Response(protocol), last=now)  # right after another
    assert protocol.calls == ["pause", "resume"] and slept == [0.1]
    await inf._let_events_pile_up(_Response(None), last=now)  # no connection: nothing
    assert slept == [0.1]
