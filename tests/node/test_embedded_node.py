"""deploy/overlays/embedded on the real node: one all-in-one Pod, its log on a claim.

The overlay is applied as kustomize renders it, with only what this cluster
needs changed, done to the rendered objects:

* its own namespace (``pushrelay-embedded``) and a suffix on its cluster-scoped
  names (ClusterRoles, bindings, the refresher guard), so it runs beside
  ``deploy/``'s pods of ``test_deploy_node.py`` on the same node;
* the claim's storage: the devstack's node has no provisioner, so the test
  creates a ``hostPath`` PersistentVolume (a directory of the node's state,
  owned by uid 10001: the kubelet applies no ``fsGroup`` to hostPath) bound in
  advance to the StatefulSet's claim, of a storage class no provisioner
  watches. (hostPath is not allowed in the restricted namespace's *Pods*; a
  claim on a hostPath *volume* is, which is also what a ``local`` PV is.)
* ``PUSHRELAY_REFRESH_MIN_INTERVAL`` = 300 s, so the second push to a Warehouse
  within that window is held for a trailing patch: accepted (202, durable in
  the log) but not yet refreshed, and not committed.

Then:

1. the Pod becomes Ready and a Quay push through the Service refreshes a Warehouse;
2. a second push to the same Warehouse is accepted and held; the Pod is
   deleted (an ordinary delete: SIGTERM, and the refresher's graceful stop
   hands held requests back uncommitted rather than patching them early); the
   StatefulSet's new Pod comes up on the same claim and refreshes the Warehouse
   again. Only the log on the claim can cause that: the new process starts with
   empty memory, and the old one neither patched the held push nor committed it.
"""

from __future__ import annotations

import asyncio
import copy
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION, WAREHOUSE
from pushrelay_devstack.stack import Devstack
from tests.faults.harness import Project, create_project, delete_namespace
from tests.faults.loadgen import payload
from tests.faults.plan import Plan
from tests.integration.test_deploy_rbac import server_side_apply
from tests.node.cluster import not_ready_report, pods, ready, service_url, wait_for
from tests.node.conftest import record
from tests.unit.test_deploy import OVERLAYS, kustomize

pytestmark = [pytest.mark.integration, pytest.mark.node]

NS = "pushrelay-embedded"
SUFFIX = "-embedded"
STATEFULSET = "pushrelay-all-in-one"
POD = f"{STATEFULSET}-0"
CLAIM = f"data-{POD}"
STORAGE_CLASS = "pushrelay-node-hostpath"
HOLD_S = "300"  # PUSHRELAY_REFRESH_MIN_INTERVAL: the second push waits this long
UID = 10001

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                  "ValidatingAdmissionPolicyBinding"}


def relocated(objects: list[dict[str, Any]], namespace: str, suffix: str,
              storage_class: str) -> list[dict[str, Any]]:
    """The overlay's objects in ``namespace``, cluster-scoped names with ``suffix``
    (and every reference to them), the claim on ``storage_class``, the hold window."""
    out = []
    for obj in copy.deepcopy(objects):
        kind, meta = obj["kind"], obj["metadata"]
        if kind == "Namespace":
            meta["name"] = namespace
        elif kind in CLUSTER_SCOPED:
            meta["name"] += suffix
        else:
            meta["namespace"] = namespace
        if kind == "ClusterRoleBinding":
            obj["roleRef"]["name"] += suffix
            for subject in obj["subjects"]:
                subject["namespace"] = namespace
        if kind == "ValidatingAdmissionPolicy":
            for condition in obj["spec"]["matchConditions"]:
                condition["expression"] = condition["expression"].replace(
                    "system:serviceaccount:pushrelay:", f"system:serviceaccount:{namespace}:")
        if kind == "ValidatingAdmissionPolicyBinding":
            obj["spec"]["policyName"] += suffix
        if kind == "ConfigMap":
            obj["data"]["PUSHRELAY_REFRESH_MIN_INTERVAL"] = HOLD_S
        if kind == "StatefulSet":
            for template in obj["spec"]["volumeClaimTemplates"]:
                template["spec"]["storageClassName"] = storage_class
        out.append(obj)
    return out


def host_path_volume(name: str, path: Path, size: str) -> dict[str, Any]:
    """A PersistentVolume on the node's ``path``, reserved for the StatefulSet's claim."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "pushrelay"}},
        "spec": {
            "capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
            "claimRef": {"namespace": NS, "name": CLAIM},
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }


async def pod_uid(api: ApiClient) -> str | None:
    """The uid of the StatefulSet's Pod when it is Ready, else None."""
    for pod in await pods(api, NS, "all-in-one"):
        if pod["metadata"]["name"] == POD and ready(pod):
            return str(pod["metadata"]["uid"])
    return None


async def wait_ready(api: ApiClient, within: float = 300) -> str:
    try:
        return str(await wait_for(lambda: pod_uid(api), within, f"{POD} Ready"))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await not_ready_report(api, NS)}") from None


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def embedded(node_stack: Devstack, node_kube: ApiClient,
                   product_image: str) -> AsyncIterator[str]:
    """The overlay applied in its namespace on a hostPath-backed claim; yields the
    ingress Service's URL. Everything it made is deleted afterwards (the claim's
    directory too: the PV is Retain, so nothing else would)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed (it renders the overlay)")
    objects = relocated(kustomize(OVERLAYS / "embedded"), NS, SUFFIX, STORAGE_CLASS)
    (sts,) = [o for o in objects if o["kind"] == "StatefulSet"]
    (template,) = sts["spec"]["volumeClaimTemplates"]
    directory = node_stack.paths.root / "node" / f"pv-embedded-{uuid.uuid4().hex[:6]}"
    directory.mkdir(parents=True)
    os.chown(directory, UID, UID)
    pv = host_path_volume(f"pushrelay{SUFFIX}-{directory.name[-6:]}", directory,
                          template["spec"]["resources"]["requests"]["storage"])
    await request_json(node_kube, "POST", "/api/v1/persistentvolumes", body=pv)
    started = time.monotonic()
    try:
        for obj in objects:
            await server_side_apply(node_kube, obj)
        await wait_ready(node_kube)
        record("embedded_apply_to_ready_s", round(time.monotonic() - started, 1))
        yield await service_url(node_kube, NS, "pushrelay-ingress")
    finally:
        await delete_namespace(node_kube, NS)
        for obj in objects:
            if obj["kind"] in CLUSTER_SCOPED:
                group_version = obj["apiVersion"]
                plural = {"ClusterRole": "clusterroles",
                          "ClusterRoleBinding": "clusterrolebindings",
                          "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
                          "ValidatingAdmissionPolicyBinding":
                              "validatingadmissionpolicybindings"}[obj["kind"]]
                path = f"/apis/{group_version}/{plural}/{obj['metadata']['name']}"
                await request_json(node_kube, "DELETE", path)

        async def gone() -> bool:
            listing = await request_json(node_kube, "GET", f"/api/v1/namespaces/{NS}/pods")
            return not listing.get("items")

        await wait_for(gone, 120, f"the pods of {NS} gone")
        await request_json(node_kube, "DELETE",
                           f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def project(node_kube: ApiClient, embedded: str) -> AsyncIterator[Project]:
    project = await create_project(node_kube, Plan(repos=1, unique=1), prefix="node-emb")
    try:
        yield project
    finally:
        await delete_namespace(node_kube, project.namespace)


# --- tests ------------------------------------------------------------------------------


async def refresh_value(api: ApiClient, project: Project) -> str | None:
    obj = await request_json(api, "GET", WAREHOUSE.path(project.namespace,
                                                        project.plan.expected(0)[0]))
    value = (obj["metadata"].get("annotations") or {}).get(REFRESH_ANNOTATION)
    return str(value) if value else None


async def test_claim_is_bound_and_the_log_is_on_it(node_kube: ApiClient, embedded: str) -> None:
    claim = await request_json(node_kube, "GET",
                               f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{CLAIM}")
    assert claim["status"]["phase"] == "Bound"
    pv = await request_json(node_kube, "GET",
                            f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
    data = Path(pv["spec"]["hostPath"]["path"]) / "data"
    await wait_for(lambda: _has_files(data), 60, f"the embedded log in {data}")


async def _has_files(directory: Path) -> bool:
    def check() -> bool:
        return directory.is_dir() and any(directory.iterdir())

    return await asyncio.to_thread(check)


async def test_a_held_push_survives_the_pods_deletion(
    node_kube: ApiClient, embedded: str, project: Project
) -> None:
    repository, tag = project.plan.push(0)
    url = embedded + project.expected_path
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async def push() -> str | None:
            try:
                async with http.post(url, data=payload(repository, tag)) as resp:
                    return resp.headers.get("X-Pushrelay-Delivery") if resp.status == 202 else None
            except (aiohttp.ClientError, TimeoutError):
                return None

        # 1. A push is refreshed (the leading edge: patched at once).
        await wait_for(push, 60, "the first push accepted")
        first = await wait_for(lambda: refresh_value(node_kube, project), 60, "refreshed")
        # 2. The second is accepted and held for the trailing patch (HOLD_S away) ...
        assert await push(), "the second push was not accepted"
    old_uid = await pod_uid(node_kube)
    assert old_uid is not None
    assert await refresh_value(node_kube, project) == first  # held, not patched
    # ... when the Pod is deleted.
    deleted_at = time.monotonic()
    await request_json(node_kube, "DELETE", f"/api/v1/namespaces/{NS}/pods/{POD}")

    async def replaced() -> str | None:
        uid = await pod_uid(node_kube)
        return uid if uid and uid != old_uid else None

    await wait_for(replaced, 300, f"a new {POD} Ready")
    record("embedded_pod_replaced_s", round(time.monotonic() - deleted_at, 1))

    async def refreshed_again() -> bool:
        value = await refresh_value(node_kube, project)
        return value is not None and value != first

    await wait_for(refreshed_again, 120, "the held push refreshed by the new Pod")
    record("embedded_delete_to_refresh_s", round(time.monotonic() - deleted_at, 1))
