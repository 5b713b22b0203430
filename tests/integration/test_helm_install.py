"""``helm install`` of charts/pushrelay on the devstack, and a push through it.

1. The release's life cycle on the API server (no node needed): install creates
   every object for real, an upgrade with a changed setting changes the pods'
   config checksum, uninstall removes everything, cluster-scoped objects too.
2. On the devstack's real node (marked ``node``): the product image runs, every
   pod becomes Ready under the "restricted" Pod Security Standard, and a Quay
   push sent to the ingress Service refreshes a Warehouse. It needs a devstack
   with a node (``pushrelay devstack up --node``, which exports
   ``PUSHRELAY_DEVSTACK_NODE_KAFKA_BOOTSTRAP``: the address pods reach Kafka on)
   and the image loaded into the node (``PUSHRELAY_TEST_IMAGE``, default
   ``pushrelay:latest``, never pulled); it is skipped, saying which is missing,
   otherwise.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION
from tests.integration.conftest import eventually, temporary_namespace, unique
from tests.integration.helm_support import CHART, Helm, helm, values_file
from tests.integration.test_deploy_rbac import KARGO_API, Project, project  # noqa: F401

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


def releaser(tool: Helm, devstack_env: dict[str, str], namespace: str) -> Callable[..., str]:
    """``helm <args> --namespace <namespace>`` against the devstack; its stdout."""
    def run(*args: str) -> str:
        return tool.run(*args, "--namespace", namespace,
                        kubeconfig=devstack_env["KUBECONFIG"], timeout=300).stdout
    return run


CLUSTER_SCOPED = ("/apis/rbac.authorization.k8s.io/v1/clusterroles",
                  "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                  "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
                  "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings")


async def cluster_scoped_of(kube: ApiClient, release: str) -> list[str]:
    """Names of the cluster-scoped objects the release made that exist now."""
    found = []
    for path in CLUSTER_SCOPED:
        items = (await request_json(kube, "GET", path))["items"]
        found += [o["metadata"]["name"] for o in items
                  if o["metadata"]["name"].startswith(f"{release}-")]
    return sorted(found)


async def test_install_upgrade_uninstall_on_the_api_server(
    kube: ApiClient, devstack_env: dict[str, str], install_helm: Helm,
    release_namespace: str, tmp_path: Path,
) -> None:
    """The release's life cycle with real writes (no node needed: no pod runs).

    ``helm install`` creates every object (server-side validation and admission
    for real, Helm's ownership records); ``helm upgrade`` with a changed setting
    changes the ConfigMap and the pods' config checksum, so they would roll;
    ``helm uninstall`` removes everything, cluster-scoped objects included.
    """
    release = unique("hl")
    helm_run = releaser(install_helm, devstack_env, release_namespace)
    base = {"kafka": {"topicReplication": 1}}
    await asyncio.to_thread(helm_run, "install", release, str(CHART),
                            "--values", str(values_file(tmp_path, base)))
    try:
        ns = f"/namespaces/{release_namespace}"
        config_path = f"/api/v1{ns}/configmaps/{release}-pushrelay-config"
        deployments_path = f"/apis/apps/v1{ns}/deployments"

        async def checksums() -> dict[str, str]:
            items = (await request_json(kube, "GET", deployments_path))["items"]
            return {d["metadata"]["name"]:
                    d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                    for d in items}

        before = await checksums()
        assert sorted(before) == [f"{release}-pushrelay-{c}"
                                  for c in ("ingress", "refresher", "router")]
        assert len(await cluster_scoped_of(kube, release)) == 8  # 3 roles, 3 bindings, VAP+binding
        status = await asyncio.to_thread(helm_run, "status", release)
        assert "STATUS: deployed" in status

        changed = {**base, "logLevel": "DEBUG"}
        await asyncio.to_thread(helm_run, "upgrade", release, str(CHART),
                                "--values", str(values_file(tmp_path, changed)))
        config = await request_json(kube, "GET", config_path)
        assert config["data"]["PUSHRELAY_LOG_LEVEL"] == "DEBUG"
        after = await checksums()
        assert all(after[name] != before[name] for name in before)
    finally:
        await asyncio.to_thread(helm_run, "uninstall", release, "--wait", "--timeout", "2m")
    assert await cluster_scoped_of(kube, release) == []
    remaining = await request_json(kube, "GET", f"/apis/apps/v1/namespaces/{release_namespace}"
                                   "/deployments")
    assert remaining["items"] == []


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


@pytest.mark.node
async def test_helm_install_on_the_node_refreshes_a_warehouse(
    kube: ApiClient, devstack_env: dict[str, str], node_kafka: str, install_helm: Helm,
    release_namespace: str, project: Project,  # noqa: F811
    tmp_path: Path,
) -> None:
    release = unique("hr")
    values = values_file(tmp_path, release_values(node_kafka, f"t{uuid.uuid4().hex[:10]}."))
    helm_run = releaser(install_helm, devstack_env, release_namespace)
    started = time.monotonic()
    await asyncio.to_thread(helm_run, "install", release, str(CHART), "--values", str(values))
    try:
        await wait_until_ready(kube, release_namespace)
        ready_after = time.monotonic() - started

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
        print(f"helm install -> all pods Ready in {ready_after:.1f}s; "
              f"push -> Warehouse refreshed {time.monotonic() - started - ready_after:.1f}s later")
    finally:
        await asyncio.to_thread(helm_run, "uninstall", release, "--wait", "--timeout", "2m")
    assert await cluster_scoped_of(kube, release) == []
