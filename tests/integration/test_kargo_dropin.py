"""Drop-in next to a real Kargo (issue 12), on the real devstack.

* a ClusterConfig receiver whose Secret lives only in Kargo's system-resources
  namespace is served (``PUSHRELAY_SYSTEM_RESOURCES_NAMESPACE`` default);
* another writer of ``status.webhookReceivers`` (a second client with its own
  field manager, as Kargo's management controller) is never fought;
* ``devstack up`` on a brand-new state dir installs the CRDs (a fresh API server
  answers ``status.conditions: null`` at first), and later leaves a CRD without
  our label alone.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import merge_patch, request_json
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.fields import items, text
from pushrelay.infra.kube.informer import Informer
from pushrelay.infra.kube.resources import PROJECT_CONFIG, SECRET
from pushrelay.infra.settings import Settings
from pushrelay_devstack.kubeapi import MANAGED_BY, crd_documents
from pushrelay_devstack.paths import cache_dir
from pushrelay_devstack.stack import CONTROLLER_MANAGER, Devstack
from tests.integration.conftest import eventually
from tests.integration.test_ingress_flow import (
    add_cluster_receiver,
    expected_path,
    post,
    project_with_receiver,
    put_secret,
    quay_receiver,
    remove_cluster_receiver,
    running_ingress,
)

SYSTEM_RESOURCES = "kargo-system-resources"
KARGO_MANAGER = "kargo-management-controller"


async def ensure_namespace(kube: ApiClient, name: str) -> None:
    """A devstack started by an older pushrelay may not have created it yet."""
    try:
        await request_json(kube, "POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except KubeError as exc:
        if exc.status != 409:
            raise


async def test_cluster_receiver_secret_only_in_system_resources_namespace(
    settings: Settings, kube: ApiClient,
) -> None:
    assert settings.system_resources_namespace == SYSTEM_RESOURCES  # the default
    await ensure_namespace(kube, SYSTEM_RESOURCES)
    suffix = uuid.uuid4().hex[:8]
    name, secret_name, secret = f"sysres-{suffix}", f"quay-{suffix}", f"sr-{suffix}"
    await put_secret(kube, SYSTEM_RESOURCES, secret_name, {"secret": secret})
    with pytest.raises(KubeError):  # nowhere else
        await request_json(kube, "GET", SECRET.path("kargo-cluster-secrets", secret_name))
    created = await add_cluster_receiver(kube, quay_receiver(name, secret_name))
    path = expected_path("", name, secret)
    try:
        async with running_ingress(settings) as service, ClientSession() as http:
            receiver = await eventually(lambda: service.registry.lookup(path), within=20)
            assert receiver.secret_namespace == SYSTEM_RESOURCES
            status, body, _ = await post(http, service, path)
            assert status == 202, body
    finally:
        await remove_cluster_receiver(kube, name, delete_if_empty=created)
        await request_json(kube, "DELETE", SECRET.path(SYSTEM_RESOURCES, secret_name))


def _urls(obj: dict[str, Any]) -> list[str]:
    return [text(e, "url") for e in items(obj, "status", "webhookReceivers")]


async def test_status_is_not_fought_over(settings: Settings, kube: ApiClient,
                                         namespace: str) -> None:
    """Another controller (a second client, its own field manager) writes its own
    url for our receiver: pushrelay does not write it back (a watch counts writes)."""
    path = await project_with_receiver(kube, namespace)
    seen: list[tuple[str, list[str]]] = []  # (resourceVersion, urls) of every change

    def on_change(_: str, obj: dict[str, Any]) -> None:
        seen.append((text(obj, "metadata", "resourceVersion"), _urls(obj)))

    def versions() -> list[str]:
        return [version for version, _ in seen]

    async def touch(n: int) -> str:
        """A metadata-only change: the registry runs a new pass; returns its version."""
        before = service.registry.rebuilds
        obj = await merge_patch(kube, PROJECT_CONFIG, namespace,
                                {"metadata": {"labels": {"touch": str(n)}}},
                                namespace=namespace, field_manager="test-toucher")
        await eventually(lambda: service.registry.rebuilds > before, within=30)
        return text(obj, "metadata", "resourceVersion")

    watch = Informer(kube, PROJECT_CONFIG, on_change, namespace=namespace)
    await watch.start()
    try:
        async with running_ingress(settings) as service:
            ours = await eventually(lambda: [u for _, u in seen if u and u[0]], within=30)
            assert ours[-1][0].endswith(path)
            theirs = f"https://kargo.example.com{path}"
            written = await merge_patch(
                kube, PROJECT_CONFIG, namespace, {"status": {"webhookReceivers": [
                    {"name": "quay-push", "path": path, "url": theirs}]}},
                namespace=namespace, subresource="status", field_manager=KARGO_MANAGER)
            their_version = text(written, "metadata", "resourceVersion")
            writer = service.registry.status
            assert writer is not None
            # The ingress planned against their write (and said so, once) ...
            await eventually(lambda: any(o.name == namespace for o, _ in writer.told),
                             within=30)
            # ... and two later passes ran: any write it was going to make is made.
            touched = [await touch(0), await touch(1)]
            await eventually(lambda: touched[-1] in versions(), within=30)
    finally:
        await watch.stop()
    after = seen[versions().index(their_version):]
    assert [version for version, _ in after] == [their_version, *touched], after
    assert all(urls == [theirs] for _, urls in after), after


@pytest.fixture
def own_state_dir() -> Any:
    root = cache_dir() / f"devstack-kargo-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    stack = Devstack(root, apiserver_args=[], progress=lambda _: None)
    try:
        yield stack
    finally:
        stack.down(purge=True)


def _crd(stack: Devstack, name: str) -> dict[str, Any]:
    status, body = stack.admin_client().json(
        "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    assert status == 200, body
    return body


def test_fresh_devstack_installs_crds_and_leaves_foreign_ones_alone(
    own_state_dir: Devstack,
) -> None:
    stack = own_state_dir
    said: list[str] = []
    stack.progress = said.append
    env = stack.up()  # a brand-new state dir: empty etcd, a just-started API server
    assert Path(env["KUBECONFIG"]).exists()
    names = [d["metadata"]["name"] for d in crd_documents()]
    for name in names:
        labels = _crd(stack, name)["metadata"]["labels"]
        assert labels[MANAGED_BY[0]] == MANAGED_BY[1]
    namespaces = stack.admin_client().json("GET", "/api/v1/namespaces")[1]
    assert SYSTEM_RESOURCES in {text(n, "metadata", "name") for n in items(namespaces, "items")}

    # Someone installs a CRD of the same name without our label (Kargo's own).
    foreign = _crd(stack, "warehouses.kargo.akuity.io")
    foreign["metadata"]["labels"] = {"app.kubernetes.io/part-of": "kargo"}
    foreign["spec"]["versions"][0]["additionalPrinterColumns"] = [
        {"name": "Mine", "type": "string", "jsonPath": ".spec.mine"}]
    status, body = stack.admin_client().json(
        "PUT", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
               "warehouses.kargo.akuity.io", foreign)
    assert status == 200, body
    # A component is down, so `up` runs its install step again.
    stack.stop_component(CONTROLLER_MANAGER)
    said.clear()
    stack.up()
    after = _crd(stack, "warehouses.kargo.akuity.io")
    assert after["metadata"]["labels"] == {"app.kubernetes.io/part-of": "kargo"}
    assert after["spec"]["versions"][0]["additionalPrinterColumns"][0]["name"] == "Mine"
    assert any("warehouses.kargo.akuity.io is not ours" in line for line in said), said
