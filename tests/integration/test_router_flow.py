"""The router on the real devstack: the bus in and out, Warehouses from the API server.

Helpers here are imported by the other ``test_router_*`` modules. Absence of a
request is proven with a *sentinel*: a second push to the same repository (so
the same partition, after the first) that does produce a request; once it is
seen, the first event has been routed too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.cli.explain import run as explain_run
from pushrelay.core.events import (
    DeadLetter,
    PushEvent,
    RefreshRequest,
    Scope,
    decode_dead_letter,
    decode_refresh,
    encode,
)
from pushrelay.core.normalize import repo_urls
from pushrelay.infra.bus import open_bus
from pushrelay.infra.bus.api import Bus
from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.resources import WAREHOUSE
from pushrelay.infra.settings import Settings
from router.service import RouterService
from tests.integration.conftest import eventually, temporary_namespace

REPO = "quay.io/mynamespace/repository"


def warehouse(name: str, *subs: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": WAREHOUSE.api_version, "kind": "Warehouse",
            "metadata": {"name": name}, "spec": {"subscriptions": list(subs)}}


def image(url: str = REPO, **fields: Any) -> dict[str, Any]:
    return {"image": {"repoURL": url, **fields}}


async def create_warehouse(kube: ApiClient, namespace: str, obj: dict[str, Any]) -> None:
    await request_json(kube, "POST", WAREHOUSE.path(namespace), body=obj)


def push_event(tags: list[str], project: str | None, repo: str = REPO) -> PushEvent:
    return PushEvent(repository=repo, repo_urls=repo_urls(repo), tags=tags,
                     scope=Scope(project=project), delivery=uuid.uuid4().hex[:8])


class Collector:
    """Everything on one topic, from the beginning: a consumer of a group of its own."""

    def __init__(self, bus: Bus, topic: str) -> None:
        self.consumer = bus.consumer(topic, f"collector-{uuid.uuid4().hex[:8]}",
                                     client_id="pushrelay-test-collector")
        self.raw: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for records in (await self.consumer.poll(0.5, 1000)).values():
                self.raw += [record.value for record in records]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()

    @property
    def requests(self) -> list[RefreshRequest]:
        return [decode_refresh(v) for v in self.raw]

    @property
    def letters(self) -> list[DeadLetter]:
        return [decode_dead_letter(v) for v in self.raw]

    def warehouses(self) -> list[str]:
        return [str(r.warehouse) for r in self.requests]


class Harness:
    """Routers on one bus (``bus``, else the settings' own, started and stopped
    here), a producer of push events and collectors of what they produce."""

    def __init__(self, settings: Settings, bus: Bus | None = None) -> None:
        self.settings = settings
        self._own_bus = bus is None
        self.bus = bus if bus is not None else open_bus(settings)
        self.routers: list[RouterService] = []
        self.producer = self.bus.producer(client_id="pushrelay-test")
        self.requests = Collector(self.bus, settings.refresh_topic)
        self.dead = Collector(self.bus, settings.dead_letter_topic)

    async def add_router(self) -> RouterService:
        router = RouterService(self.settings, bus=self.bus)
        await router.start()
        self.routers.append(router)
        await eventually(lambda: router.readiness() is None, within=20)
        return router

    async def start(self) -> None:
        if self._own_bus:
            await self.bus.start()
        await self.add_router()
        await self.producer.start()
        await self.requests.start()
        await self.dead.start()

    async def stop(self) -> None:
        for router in self.routers:
            await router.stop()
        await self.requests.stop()
        await self.dead.stop()
        await self.producer.stop()
        if self._own_bus:
            await self.bus.stop()

    async def publish(self, event: PushEvent) -> PushEvent:
        await (await self.producer.send(self.settings.push_topic, encode(event),
                                        key=event.key))
        return event

    async def publish_raw(self, value: bytes, key: bytes = b"junk") -> None:
        await (await self.producer.send(self.settings.push_topic, value, key=key))

    async def requests_for(self, event: PushEvent, count: int,
                           within: float = 15) -> list[RefreshRequest]:
        def found() -> list[RefreshRequest]:
            return [r for r in self.requests.requests if r.cause.event == event.id]
        await eventually(lambda: len(found()) >= count, within=within)
        return found()

    def indexed(self, namespace: str, name: str) -> bool:
        return all(r.live is not None and r.live.index.get(namespace, name) is not None
                   for r in self.routers)


@pytest.fixture
async def harness(settings: Settings, bus: Bus) -> AsyncIterator[Harness]:
    h = Harness(settings, bus)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def namespace2(kube: ApiClient) -> AsyncIterator[str]:
    async with temporary_namespace(kube, "t2") as name:
        yield name


async def no_request_then_sentinel(h: Harness, quiet: PushEvent, sentinel: PushEvent) -> None:
    """``quiet`` produced nothing: ``sentinel`` (same partition, later) did."""
    await h.requests_for(sentinel, 1)
    assert [r for r in h.requests.requests if r.cause.event == quiet.id] == []


@pytest.mark.parametrize("kind", ["image", "chart"])
async def test_kargo_constraint_cases(kind: str, harness: Harness, kube: ApiClient,
                                      namespace: str) -> None:
    def sub(constraint: str) -> dict[str, Any]:
        if kind == "image":
            return image(constraint=constraint)
        return {"chart": {"repoURL": f"oci://{REPO}", "name": "repository",
                          "semverConstraint": constraint}}

    await create_warehouse(kube, namespace, warehouse("two", sub("^2.0.0")))
    await create_warehouse(kube, namespace, warehouse("one", sub("^1.0.0")))
    await eventually(lambda: harness.indexed(namespace, "two")
                     and harness.indexed(namespace, "one"), within=5)
    v1 = await harness.publish(push_event(["v1.0.0"], namespace))
    v2 = await harness.publish(push_event(["v2.0.0"], namespace))
    (request,) = await harness.requests_for(v1, 1)
    assert str(request.warehouse) == f"{namespace}/one"
    assert request.cause.tags == ["v1.0.0"] and request.cause.repo_url == REPO
    assert request.cause.delivery == v1.delivery
    (later,) = await harness.requests_for(v2, 1)
    assert str(later.warehouse) == f"{namespace}/two"
    assert len([r for r in harness.requests.requests if r.cause.event == v1.id]) == 1


async def test_scope(harness: Harness, kube: ApiClient, namespace: str,
                     namespace2: str) -> None:
    repo = f"quay.io/{namespace}/repository"  # cluster scope: only this test's Warehouses
    for ns in (namespace, namespace2):
        await create_warehouse(kube, ns, warehouse("w", image(repo)))
    await eventually(lambda: harness.indexed(namespace, "w")
                     and harness.indexed(namespace2, "w"), within=5)
    project = await harness.publish(push_event(["v1.0.0"], namespace, repo))
    cluster = await harness.publish(push_event(["v1.0.0"], None, repo))
    assert {str(r.warehouse) for r in await harness.requests_for(cluster, 2)} == {
        f"{namespace}/w", f"{namespace2}/w"}
    assert [str(r.warehouse) for r in await harness.requests_for(project, 1)] == [
        f"{namespace}/w"]


async def test_live_changes(harness: Harness, kube: ApiClient, namespace: str) -> None:
    # The informer only watches (it never relists on a timer), so each change
    # below is seen through the watch; the bounds are generous for loaded CI.
    await create_warehouse(kube, namespace, warehouse("w", image(constraint="^2.0.0")))
    await eventually(lambda: harness.indexed(namespace, "w"), within=10)
    await create_warehouse(kube, namespace, warehouse("probe", image(constraint="^9")))
    # The sentinel matches only "probe": route it before the informer saw
    # "probe" and no request ever comes (a CI run lost that race).
    await eventually(lambda: harness.indexed(namespace, "probe"), within=5)
    quiet = await harness.publish(push_event(["v1.0.0"], namespace))
    await no_request_then_sentinel(harness, quiet,
                                   await harness.publish(push_event(["v9.0.0"], namespace)))

    await request_json(
        kube, "PATCH", WAREHOUSE.path(namespace, "w"),
        body={"spec": {"subscriptions": [image(constraint="^1.0.0")]}},
        content_type="application/merge-patch+json")

    def changed() -> bool:
        return all(r.live is not None and (e := r.live.index.get(namespace, "w")) is not None
                   and e.generation == 2 for r in harness.routers)
    await eventually(changed, within=10)
    (request,) = await harness.requests_for(
        await harness.publish(push_event(["v1.0.0"], namespace)), 1)
    assert str(request.warehouse) == f"{namespace}/w"

    await request_json(kube, "DELETE", WAREHOUSE.path(namespace, "w"))
    await eventually(lambda: not any(r.live and r.live.index.get(namespace, "w")
                                     for r in harness.routers), within=10)
    gone = await harness.publish(push_event(["v1.0.0"], namespace))
    await no_request_then_sentinel(harness, gone,
                                   await harness.publish(push_event(["v9.0.0"], namespace)))


async def test_bad_messages_are_dead_lettered(harness: Harness, kube: ApiClient,
                                              namespace: str) -> None:
    await create_warehouse(kube, namespace, warehouse("w", image()))
    await eventually(lambda: harness.indexed(namespace, "w"), within=5)
    good = push_event(["v1.0.0"], namespace)
    valid = orjson.loads(encode(good))
    bad: list[bytes] = [
        b"not json {",
        b"[1, 2, 3]",
        orjson.dumps({**valid, "schema": "pushrelay.push/v2"}),
        orjson.dumps({**valid, "tags": "v1.0.0"}),
        orjson.dumps({**valid, "repo_urls": []}),
        orjson.dumps({**valid, "scope": {"project": 42}}),
        orjson.dumps({**valid, "tags": ["x" * 300]}),
        orjson.dumps({**valid, "tags": [f"t{i}" for i in range(10_001)]}),
        orjson.dumps({"schema": "pushrelay.push/v1", "pad": "x" * 900_000}),
        b"\xff\xfe\x00garbage",
    ]
    for value in bad:
        await harness.publish_raw(value, key=good.key)  # same partition as the good event
    await harness.publish(good)
    await harness.requests_for(good, 1)
    await eventually(lambda: len(harness.dead.raw) >= len(bad), within=10)
    letters = harness.dead.letters
    assert len(letters) == len(bad)
    assert all(d.stage == "router" and d.reason for d in letters)
    reasons = " | ".join(d.reason for d in letters)
    assert "not JSON" in reasons and "unknown schema" in reasons
    assert all(len(d.payload) <= 64 * 1024 for d in letters)
    assert harness.routers[0].dead_letters == len(bad)
    assert not harness.routers[0].crashed.is_set()


async def test_invalid_subscription_reported_once(harness: Harness, kube: ApiClient,
                                                  namespace: str) -> None:
    repo = f"quay.io/{namespace}/repository"
    await create_warehouse(kube, namespace, warehouse(
        "bad", image(repo, imageSelectionStrategy="Lexical", allowTagsRegexes=["(unclosed"]),
        image(repo, constraint="^^1")))
    await create_warehouse(kube, namespace, warehouse("good", image(repo)))
    await eventually(lambda: harness.indexed(namespace, "good")
                     and harness.indexed(namespace, "bad"), within=5)
    (request,) = await harness.requests_for(
        await harness.publish(push_event(["v1.0.0"], None, repo)), 1)
    assert str(request.warehouse) == f"{namespace}/good"
    # A status-only change (same generation) is not reported again.
    await request_json(kube, "PATCH", WAREHOUSE.path(namespace, "bad"),
                       body={"metadata": {"labels": {"touched": "yes"}}},
                       content_type="application/merge-patch+json")

    async def events() -> list[dict[str, Any]]:
        listing = await request_json(kube, "GET", f"/api/v1/namespaces/{namespace}/events")
        return [e for e in listing.get("items") or []
                if e.get("reason") == "InvalidSubscription"
                and e["involvedObject"]["name"] == "bad"]
    async def both() -> list[dict[str, Any]]:
        return found if len(found := await events()) >= 2 else []
    found = await eventually(both, within=15)
    assert {e["type"] for e in found} == {"Warning"}
    assert len(found) == 2  # one per broken subscription
    # (The router's own counter is not checked: it counts every namespace of the
    # shared cluster, including another test's broken Warehouses still being deleted.)
    assert all(e["count"] == 1 for e in found)


async def test_explain_against_the_api_server(kube: ApiClient, namespace: str,
                                              namespace2: str, settings: Settings) -> None:
    await create_warehouse(kube, namespace, warehouse("one", image(constraint="^1.0.0")))
    await create_warehouse(kube, namespace, warehouse("two", image(constraint="^2.0.0")))
    await create_warehouse(kube, namespace2, warehouse("other", image()))
    result = await explain_run(REPO, ["v1.0.0"], namespace, settings.kubeconfig)
    assert [(m.namespace, m.name) for m in result.matches] == [(namespace, "one")]
    mine = {(r.namespace, r.warehouse): r for r in result.subscriptions
            if r.namespace in (namespace, namespace2)}
    assert mine[(namespace, "two")].outcome == "no-qualifying-tag"
    assert "^2.0.0" in mine[(namespace, "two")].rejected["v1.0.0"]
    assert mine[(namespace2, "other")].outcome == "out-of-scope"


async def test_a_push_without_tags_refreshes_every_subscriber_in_scope(
    harness: Harness, kube: ApiClient, namespace: str, namespace2: str,
) -> None:
    """Kargo's rule: nothing to filter on means every subscriber is refreshed."""
    repo = f"quay.io/{namespace}/untagged"
    await create_warehouse(kube, namespace, warehouse("semver", image(repo, constraint="^9")))
    await create_warehouse(kube, namespace, warehouse("chart", {"chart": {
        "repoURL": repo, "semverConstraint": "^9"}}))  # no oci:// prefix: found all the same
    await create_warehouse(kube, namespace2, warehouse("elsewhere", image(repo)))
    await eventually(lambda: all(harness.indexed(ns, n) for ns, n in (
        (namespace, "semver"), (namespace, "chart"), (namespace2, "elsewhere"))), within=10)
    event = await harness.publish(push_event([], namespace, repo))
    requests = await harness.requests_for(event, 2)
    assert sorted(str(r.warehouse) for r in requests) == [
        f"{namespace}/chart", f"{namespace}/semver"]
    assert all(r.cause.tags == [] for r in requests)
    tagged = await harness.publish(push_event(["latest"], None, repo))  # tags still filter
    sentinel = await harness.publish(push_event(["9.1.0"], None, repo))
    await no_request_then_sentinel(harness, tagged, sentinel)
