"""``helm install`` of charts/pushrelay on the devstack's real node, and a push through it.

The release runs the product image on the devstack's kubelet node: every pod
becomes Ready under the "restricted" Pod Security Standard, a Quay push sent to
the ingress Service refreshes a Warehouse, and ``helm uninstall`` removes what
the release made (cluster-scoped RBAC and admission policy included).

Needs a devstack with a node (``pushrelay devstack up --node``, which exports
``PUSHRELAY_DEVSTACK_NODE_KAFKA_BOOTSTRAP``: the address pods reach Kafka on)
and the image loaded into the node (``PUSHRELAY_TEST_IMAGE``, default
``pushrelay:latest``, never pulled). Skipped, saying which is missing, otherwise.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.kube.client import request_json
from pushrelay.kube.resources import REFRESH_ANNOTATION
from tests.integration.conftest import eventually, temporary_namespace, unique
from tests.integration.helm_support import CHART, Helm, helm, values_file
from tests.integration.test_deploy_rbac import KARGO_API, Project, project  # noqa: F401

pytestmark = pytest.mark.node

NODE_KAFKA = "PUSHRELAY_DEVSTACK_NODE_KAFKA_BOOTSTRAP"
IMAGE = os.environ.get("PUSHRELAY_TEST_IMAGE", "pushrelay:latest")


@pytest.fixture(scope="module")
async def node_kafka(kube: ApiClient, devstack_env: dict[str, str]) -> str:
    """The Kafka address pods use; skips unless the devstack has a Ready node."""
    bootstrap = devstack_env.get(NODE_KAFKA) or os.environ.get(NODE_KAFKA)
    if not bootstrap:
        pytest.skip(f"no devstack node: {NODE_KAFKA} is not set (start the devstack with "
                    "`pushrelay devstack up --node` and export its env)")
    nodes = (await request_json(kube, "GET", "/api/v1/nodes"))["items"]
    ready = [n["metadata"]["name"] for n in nodes
             if any(c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", []))]
    if not ready:
        names = [n["metadata"]["name"] for n in nodes]
        pytest.skip(f"no Ready node in the devstack (nodes: {names})")
    return bootstrap


@pytest.fixture
def install_helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return helm(tmp_path_factory.mktemp("helm-install"))


@pytest.fixture
async def release_namespace(kube: ApiClient) -> AsyncIterator[str]:
    async with temporary_namespace(kube, "rel") as name:
        await request_json(kube, "PATCH", f"/api/v1/namespaces/{name}", body={
            "metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                    "pod-security.kubernetes.io/enforce-version": "latest"}}},
            content_type="application/merge-patch+json")
        yield name


def release_values(kafka: str, prefix: str) -> dict[str, Any]:
    repository, _, tag = IMAGE.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "kafka": {"bootstrap": kafka, "topicPrefix": prefix, "topicPartitions": 3,
                  "topicReplication": 1},
        "baseUrl": "http://pushrelay.test",
        "writeStatus": True,
        "config": {"PUSHRELAY_EVENT_QPS": "20", "PUSHRELAY_REFRESH_MIN_INTERVAL": "0.5",
                   "PUSHRELAY_ROUTER_GROUP": f"{prefix}router",
                   "PUSHRELAY_REFRESHER_GROUP": f"{prefix}refresher"},
        **{c: {"replicas": 1} for c in ("ingress", "router", "refresher")},
    }


async def pod_problems(kube: ApiClient, namespace: str) -> list[str]:
    """Containers that will not start without a change (image missing, crash loop)."""
    pods = (await request_json(kube, "GET", f"/api/v1/namespaces/{namespace}/pods"))["items"]
    problems = []
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses", []):
            waiting = status.get("state", {}).get("waiting", {})
            if waiting.get("reason") in ("ErrImageNeverPull", "CrashLoopBackOff",
                                         "CreateContainerConfigError"):
                problems.append(f"{pod['metadata']['name']}: {waiting['reason']} "
                                f"{waiting.get('message', '')}")
    return problems


async def wait_until_ready(kube: ApiClient, namespace: str, within: float = 300) -> None:
    """Every Deployment of the release fully Ready; fails early on a pod that cannot start."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"

    async def ready() -> bool:
        problems = await pod_problems(kube, namespace)
        if problems:
            pytest.fail("pods cannot start (is the image loaded into the node? "
                        f"PUSHRELAY_TEST_IMAGE={IMAGE}):\n" + "\n".join(problems))
        items = (await request_json(kube, "GET", path))["items"]
        return len(items) == 3 and all(
            d.get("status", {}).get("readyReplicas", 0) == d["spec"]["replicas"] for d in items)

    await eventually(ready, within=within, interval=2)


async def test_helm_install_on_the_node_refreshes_a_warehouse(
    kube: ApiClient, devstack_env: dict[str, str], node_kafka: str, install_helm: Helm,
    release_namespace: str, project: Project,  # noqa: F811
    tmp_path: Path,
) -> None:
    release = unique("hr")
    values = values_file(tmp_path, release_values(node_kafka, f"t{uuid.uuid4().hex[:10]}."))
    kubeconfig = devstack_env["KUBECONFIG"]

    def helm_run(*args: str) -> None:
        install_helm.run(*args, "--namespace", release_namespace, kubeconfig=kubeconfig,
                         timeout=300)

    await asyncio.to_thread(helm_run, "install", release, str(CHART), "--values", str(values))
    try:
        await wait_until_ready(kube, release_namespace)

        service = await request_json(kube, "GET", f"/api/v1/namespaces/{release_namespace}"
                                     f"/services/{release}-pushrelay-ingress")
        url = f"http://{service['spec']['clusterIP']}:80/quay/{project.receiver_hash}"
        wh_path = f"{KARGO_API}/namespaces/{project.namespace}/warehouses/{project.warehouse}"
        owner, _, name = project.repo.removeprefix("quay.io/").partition("/")
        payload = {"name": name, "repository": f"{owner}/{name}", "namespace": owner,
                   "docker_url": project.repo,
                   "homepage": f"https://quay.io/repository/{owner}/{name}",
                   "updated_tags": ["1.0.0"]}

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            async def accepted() -> bool:
                # Ready pods may still be loading the receiver's Secret (404) and the
                # Service's endpoints may lag readiness: retry until 202.
                try:
                    async with session.post(url, json=payload) as response:
                        return response.status == 202
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await eventually(accepted, within=60, interval=1)

        async def refreshed() -> bool:
            wh = await request_json(kube, "GET", wh_path)
            return bool(wh["metadata"].get("annotations", {}).get(REFRESH_ANNOTATION))

        await eventually(refreshed, within=60, interval=0.5)
    finally:
        await asyncio.to_thread(helm_run, "uninstall", release, "--wait", "--timeout", "2m")
    for kind in ("clusterroles", "clusterrolebindings"):
        listed = await request_json(kube, "GET", f"/apis/rbac.authorization.k8s.io/v1/{kind}")
        assert not [o for o in listed["items"] if o["metadata"]["name"].startswith(release)]
