"""``helm install`` of charts/pushrelay on the devstack's real node, a push through it.

The session's node stack and the product image it imported (``conftest.py``),
so this module and ``test_deploy_node.py`` share one ``up`` and one import.
The release goes into a namespace of its own enforcing the "restricted" Pod
Security Standard (``docs/deploy.md``'s Helm steps), with what a values file
for this cluster sets: the imported image (``pullPolicy: Never``: a missing
image fails at once instead of waiting on a registry), Kafka on the devstack
broker's node listener with one replica per topic, a topic prefix and consumer
groups of this run (``deploy/``'s pods may share the broker), one replica per
component. The tests run in file order and share the release:

1. ``helm install``: every pod of the three Deployments Ready on the node;
2. a Quay push sent to the ingress Service refreshes a Warehouse;
3. ``helm uninstall`` leaves nothing: every object of the release's manifest
   is gone, cluster-scoped ones too, and so are its ReplicaSets, its pods (the
   API server drops a pod once the kubelet has stopped its containers) and
   Helm's release records.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import request_json
from pushrelay_devstack import node
from pushrelay_devstack.stack import Devstack
from tests.integration.conftest import unique
from tests.integration.helm_support import (
    Release,
    cluster_scoped_of,
    helm,
    restricted_namespace,
    values_file,
)
from tests.integration.test_deploy_rbac import SERVICES, call, object_path
from tests.node.cluster import (
    pods,
    push_refreshes,
    ready,
    service_url,
    wait_for,
    wait_rolled_out,
)
from tests.node.conftest import record

pytestmark = [pytest.mark.integration, pytest.mark.node]


def release_values(image: str, bootstrap: str, prefix: str) -> dict[str, Any]:
    """The values file of this cluster (see the module's docstring)."""
    repository, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "kafka": {"bootstrap": bootstrap, "topicPrefix": prefix, "topicPartitions": 3,
                  "topicReplication": 1},
        "baseUrl": "http://pushrelay.test",
        "writeStatus": True,
        "config": {"PUSHRELAY_EVENT_QPS": "20", "PUSHRELAY_REFRESH_MIN_INTERVAL": "0.5",
                   "PUSHRELAY_ROUTER_GROUP": f"{prefix}router",
                   "PUSHRELAY_REFRESHER_GROUP": f"{prefix}refresher"},
        **{c: {"replicas": 1} for c in SERVICES},
    }


def deployments(release: Release) -> list[str]:
    return [f"{release.name}-pushrelay-{c}" for c in SERVICES]


@pytest.fixture(scope="module")
async def release(node_stack: Devstack, node_kube: ApiClient,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Release]:
    """A release name and its restricted namespace; uninstalled (if still there) after."""
    async with restricted_namespace(node_kube, "helm") as namespace:
        rel = Release(helm(tmp_path_factory.mktemp("helm-node")), unique("hn"), namespace,
                      str(node_stack.kubeconfig))
        try:
            yield rel
        finally:
            await rel.uninstall()


@pytest.fixture(scope="module")
async def installed(node_stack: Devstack, node_kube: ApiClient, product_image: str,
                    release: Release, tmp_path_factory: pytest.TempPathFactory) -> Release:
    """``helm install`` with this cluster's values, every Deployment rolled out."""
    prefix = f"helm-{uuid.uuid4().hex[:6]}."
    bootstrap = node_stack.env()["PUSHRELAY_DEVSTACK_NODE_KAFKA_BOOTSTRAP"]
    values = values_file(tmp_path_factory.mktemp("helm-values"),
                         release_values(product_image, bootstrap, prefix))
    started = time.monotonic()
    await release.install(values)
    record("helm_install_s", round(time.monotonic() - started, 1))
    await wait_rolled_out(node_kube, release.namespace, deployments(release))
    record("helm_install_to_all_pods_ready_s", round(time.monotonic() - started, 1))
    return release


async def test_every_pod_ready(node_kube: ApiClient, installed: Release) -> None:
    for service in SERVICES:
        found = await pods(node_kube, installed.namespace, service)
        assert len(found) == 1 and ready(found[0]), service
        assert found[0]["spec"]["nodeName"] == node.NODE_NAME
        assert found[0]["metadata"]["labels"]["app.kubernetes.io/instance"] == installed.name


async def test_push_through_the_service_refreshes(node_kube: ApiClient,
                                                  installed: Release) -> None:
    url = await service_url(node_kube, installed.namespace, f"{installed.name}-pushrelay-ingress")
    timing = await push_refreshes(node_kube, url, prefix="helm-push")
    record("helm_push_accepted_s", timing.accepted_s)
    record("helm_push_to_refresh_s", timing.refreshed_s)


async def test_uninstall_leaves_nothing(node_kube: ApiClient, installed: Release) -> None:
    manifest = [d for d in yaml.safe_load_all(await installed.run("get", "manifest",
                                                                  installed.name)) if d]
    assert sorted(o["metadata"]["name"] for o in manifest
                  if o["kind"] == "Deployment") == sorted(deployments(installed))
    started = time.monotonic()
    await installed.uninstall()
    record("helm_uninstall_s", round(time.monotonic() - started, 1))

    remaining = []
    for obj in manifest:
        status, _ = await call(node_kube, "GET", object_path(obj))
        if status != 404:
            remaining.append(f"{obj['kind']}/{obj['metadata']['name']}: {status}")
    assert remaining == []
    assert await cluster_scoped_of(node_kube, installed.name) == []

    instance = [("labelSelector", f"app.kubernetes.io/instance={installed.name}")]
    owned = {"replicasets": f"/apis/apps/v1/namespaces/{installed.namespace}/replicasets",
             "pods": f"/api/v1/namespaces/{installed.namespace}/pods"}

    async def collected() -> bool:  # the garbage collector, then the kubelet
        for path in owned.values():
            if (await request_json(node_kube, "GET", path, query=instance))["items"]:
                return False
        return True

    await wait_for(collected, 180, "ReplicaSets and pods of the release gone")
    record("helm_uninstall_to_pods_gone_s", round(time.monotonic() - started, 1))
    records = await request_json(
        node_kube, "GET", f"/api/v1/namespaces/{installed.namespace}/secrets",
        query=[("labelSelector", f"owner=helm,name={installed.name}")])
    assert records["items"] == []
