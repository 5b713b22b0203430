"""Bad input reaching each stage: reported or dead-lettered, and everything else unaffected.

Fills the gaps left by the stage tests (``test_router_flow`` dead-letters bad push
events of every kind; ``test_refresher_service`` bad JSON, an unknown schema, a
missing Warehouse and a 403; ``test_ingress_flow`` a missing Secret or key):

* refresh requests with wrong types, a near-1 MiB body, an empty value, and
  Warehouse names that are not Kubernetes names (``a/b``, ``..``, a path that
  would climb to another Warehouse, control characters) — dead-lettered or
  dropped, never patching anything else; the consumer keeps going;
* Warehouses whose subscriptions are malformed in every way the CRD lets through
  — reported, while a good Warehouse on the same repository is still refreshed;
* ProjectConfigs whose receivers are malformed — reported, while the good
  receiver next to them keeps answering 202.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import ClientSession
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.events import Cause, RefreshRequest, WarehouseRef, decode_dead_letter, encode
from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.resources import PROJECT_CONFIG, SECRET, WAREHOUSE
from pushrelay.infra.settings import Settings
from tests.integration.conftest import eventually
from tests.integration.refresher_support import (
    all_committed,
    create_warehouses,
    produce,
    read_topic,
    request,
    running_refresher,
    watching,
)
from tests.integration.test_ingress_flow import (
    PAYLOAD,
    dumps,
    expected_path,
    put_secret,
    running_ingress,
)
from tests.integration.test_router_flow import Harness, image, push_event, warehouse

# ---- refresher ------------------------------------------------------------------------------


def _raw_request(namespace: str, name: str) -> bytes:
    """A refresh request for any name at all (built without validation, as a foreign
    producer could)."""
    req = RefreshRequest.model_construct(
        schema_="pushrelay.refresh/v1", id=f"bad-{name[:20]!r}",
        warehouse=WarehouseRef.model_construct(namespace=namespace, name=name),
        cause=Cause.model_construct(event="e", repo_url="quay.io/a/b", tags=["1.0.0"],
                                    delivery=None),
        requested_at=datetime(2024, 1, 1, tzinfo=UTC))
    data = req.model_dump(mode="json", by_alias=True)
    return orjson.dumps(data)


async def test_refresher_survives_bad_requests_and_patches_only_what_was_named(
        kube: ApiClient, namespace: str, settings: Settings) -> None:
    await create_warehouses(kube, namespace, ["ok", "victim", "b"])
    valid = orjson.loads(encode(request(namespace, "ok", "d-valid")))
    wrong_types = [
        {**valid, "warehouse": f"{namespace}/ok"},
        {**valid, "warehouse": {"namespace": namespace, "name": 42}},
        {**valid, "cause": {**valid["cause"], "tags": "1.0.0"}},
        {**valid, "requested_at": "yesterday"},
        {**valid, "warehouse": {"namespace": "", "name": "ok"}},
        {"schema": "pushrelay.refresh/v1", "pad": "x" * 1_000_000},
    ]
    not_names = ["a/b", "..", ".", "../warehouses/victim", "../../namespaces", "x y",
                 "UPPER", "nul\x00", "é", "a" * 300, "ok/status", "%2e%2e"]
    bad: list[RefreshRequest | bytes] = [b"", b"null", b"{}"]
    bad += [orjson.dumps(doc) for doc in wrong_types]
    bad += [_raw_request(namespace, name) for name in not_names]
    bad += [_raw_request("../" + namespace, "victim"), _raw_request(namespace + "/x", "b")]
    async with watching(kube, namespace) as watch, running_refresher(settings) as service:
        sent = await produce(settings, [*bad, request(namespace, "ok", "d-after")])
        await eventually(lambda: watch.refreshed_after({"ok": sent["ok"]}), within=30)
        await eventually(lambda: service.marks.outstanding() == 0, within=60)
        await eventually(lambda: all_committed(settings), within=30)
        assert not service.crashed.is_set() and service.readiness() is None
        # Only the Warehouse that was named got a refresh: no path trick reached another.
        assert watch.patches("victim") == 0, watch.values
        assert watch.patches("b") == 0, watch.values
        assert watch.patches("ok") == 1
    expected = 3 + len(wrong_types) + len(not_names) + 2
    letters = [decode_dead_letter(raw) for raw in
               await read_topic(settings, settings.dead_letter_topic, expected)]
    assert len(letters) == expected
    assert all(letter.stage == "refresher" and letter.reason for letter in letters)
    assert sum("not a valid Kubernetes" in letter.reason for letter in letters) == \
        len(not_names) + 2
    assert all(len(letter.payload) <= 64 * 1024 for letter in letters)


# ---- router: malformed Warehouses -------------------------------------------------------------

REPO = "quay.io/mynamespace/repository"


async def test_malformed_warehouses_are_reported_and_the_good_one_is_refreshed(
        settings: Settings, kube: ApiClient, namespace: str) -> None:
    shapes: dict[str, Any] = {
        "empty-sub": [{}],
        "string-sub": ["quay.io/mynamespace/repository"],
        "two-kinds": [{"image": {"repoURL": REPO}, "git": {"repoURL": "https://g/x"}}],
        "no-repo": [{"image": {"constraint": "^1.0.0"}}],
        "repo-not-string": [{"image": {"repoURL": ["x"]}}],
        "deprecated": [image(REPO, allowTags="^v")],
        "bad-strategy": [image(REPO, imageSelectionStrategy="Newest!")],
        "bad-regex": [image(REPO, imageSelectionStrategy="Lexical", allowTagsRegexes=["(a"])],
        "bad-constraint": [image(REPO, constraint=">>1")],
        "image-is-string": [{"image": REPO}],
        "chart-no-name": [{"chart": {"repoURL": "oci://" + REPO, "semverConstraint": "^^"}}],
    }
    created = []
    for name, subs in shapes.items():
        body = warehouse(name)
        body["spec"]["subscriptions"] = subs
        try:
            await request_json(kube, "POST", WAREHOUSE.path(namespace), body=body)
            created.append(name)
        except KubeError as exc:  # the CRD refused it: it cannot reach pushrelay
            assert exc.status in (400, 422), exc
    for name, spec in (("no-spec", None), ("null-subs", {"subscriptions": None})):
        body = warehouse(name)
        if spec is None:
            del body["spec"]
        else:
            body["spec"] = spec
        await request_json(kube, "POST", WAREHOUSE.path(namespace), body=body)
        created.append(name)
    await request_json(kube, "POST", WAREHOUSE.path(namespace),
                       body=warehouse("good", image(REPO), {"image": {"constraint": "x"}}))
    assert len(created) >= 8, created

    harness = Harness(settings)
    await harness.start()
    try:
        await eventually(lambda: harness.indexed(namespace, "good"), within=15)
        event = await harness.publish(push_event(["v1.0.0", "1.0.0"], namespace, REPO))
        (req,) = await harness.requests_for(event, 1)
        assert str(req.warehouse) == f"{namespace}/good"

        # "good": its second subscription (no repoURL) is the broken one.
        expected = {"good", "bad-regex", "bad-constraint", "deprecated", "bad-strategy"}

        async def reported() -> set[str]:
            # Events are written at most PUSHRELAY_EVENT_QPS a second: wait for all.
            listing = await request_json(kube, "GET", f"/api/v1/namespaces/{namespace}/events")
            names = {e["involvedObject"]["name"] for e in listing.get("items") or []
                     if e.get("reason") == "InvalidSubscription"}
            return names if expected <= names else set()

        await eventually(reported, within=60)
        await harness.requests_for(event, 1)
        assert len([r for r in harness.requests.requests if r.cause.event == event.id]) == 1
        assert not harness.routers[0].crashed.is_set()
    finally:
        await harness.stop()


# ---- ingress: malformed ProjectConfigs -----------------------------------------------------------


async def test_malformed_receivers_are_reported_and_the_good_one_is_served(
        settings: Settings, kube: ApiClient, namespace: str) -> None:
    await put_secret(kube, namespace, "good", {"secret": "good-secret"})
    await put_secret(kube, namespace, "no-key", {"other": "x"})
    await request_json(kube, "POST", SECRET.path(namespace), body={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-b64"},
        "data": {"secret": base64.b64encode(b"\xff\xfe").decode()}})
    receivers: list[Any] = [
        {"name": "good", "quay": {"secretRef": {"name": "good"}}},
        {"name": "missing-secret", "quay": {"secretRef": {"name": "nope"}}},
        {"name": "no-key", "quay": {"secretRef": {"name": "no-key"}}},
        {"name": "no-ref", "quay": {}},
        {"name": "no-ref-name", "quay": {"secretRef": {}}},
        {"quay": {"secretRef": {"name": "good"}}},  # no name
        {"name": "dup", "quay": {"secretRef": {"name": "good"}}},
        {"name": "dup", "quay": {"secretRef": {"name": "good"}}},
        {"name": "github-only", "github": {"secretRef": {"name": "good"}}},
        {"name": "binary-secret", "quay": {"secretRef": {"name": "not-b64"}}},
    ]
    body = {"apiVersion": PROJECT_CONFIG.api_version, "kind": "ProjectConfig",
            "metadata": {"name": namespace}, "spec": {"webhookReceivers": receivers}}
    await request_json(kube, "POST", PROJECT_CONFIG.path(namespace), body=body)
    good = expected_path(namespace, "good", "good-secret")
    async with running_ingress(settings) as service, ClientSession() as http:
        await eventually(lambda: service.registry.lookup(good), within=20)
        async with http.post(f"http://127.0.0.1:{service.port}{good}",
                             data=dumps(PAYLOAD)) as resp:
            assert resp.status == 202

        async def condition() -> dict[str, Any] | None:
            obj = await request_json(kube, "GET", PROJECT_CONFIG.path(namespace, namespace))
            for cond in (obj.get("status") or {}).get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("status") == "False":
                    return dict(cond)
            return None

        ready = await eventually(condition, within=20)
        for name in ("missing-secret", "no-key", "no-ref", "dup"):
            assert name in ready["message"], ready
        assert not service.crashed.is_set()
        served = [r.name for r in service.registry.table.values()
                  if r.owner.namespace == namespace]
        # the first of two receivers with one name is served, the second reported
        assert {"good", "dup"} <= set(served) <= {"good", "dup", "binary-secret"}, served
