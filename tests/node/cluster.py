"""What every real-node test does with pushrelay's pods, however they were installed.

``deploy/`` (``test_deploy_node.py``) and the Helm chart (``test_helm_node.py``)
run the same three Deployments, differing only in namespace and names, so the
waits, the pod listings and the push check live here once:

- ``wait_rolled_out``: what ``kubectl rollout status`` waits for, failing at once
  on a pod whose image can never be found (nothing is pulled on the node) and
  naming the waiting reasons of every container otherwise;
- ``pods`` / ``ready`` / ``pod_log``: pushrelay's pods of a namespace, one
  service's or all, and a pod's log (through the API server and the kubelet);
- ``service_url``: a Service's ClusterIP address, reached from the host through
  kube-proxy;
- ``push_refreshes``: a fresh project, one Quay push through the ingress Service
  until it is accepted, and the Warehouse it matches refreshed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import raw_request, request_json
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION, WAREHOUSE
from tests.faults.harness import create_project, delete_namespace
from tests.faults.loadgen import payload
from tests.faults.plan import Plan

ROLLOUT_TIMEOUT = 300
# Waiting reasons that no amount of waiting fixes here (no registry is reachable).
HOPELESS = frozenset({"ErrImageNeverPull", "InvalidImageName", "ErrImagePull",
                      "ImagePullBackOff"})


async def wait_for(predicate: Callable[[], Awaitable[Any]], within: float, what: str,
                   interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail
    with ``not <what> within <within>s``."""
    deadline = time.monotonic() + within
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {within:.0f}s")
        await asyncio.sleep(interval)


def selector(service: str | None = None) -> str:
    """The label selector of one service's pods, or of all of pushrelay's."""
    return (f"app.kubernetes.io/name=pushrelay-{service}" if service
            else "app.kubernetes.io/part-of=pushrelay")


async def pods(api: ApiClient, namespace: str, service: str | None = None) -> list[dict[str, Any]]:
    listing = await request_json(api, "GET", f"/api/v1/namespaces/{namespace}/pods",
                                 query=[("labelSelector", selector(service))])
    return list(listing.get("items") or [])


def ready(pod: dict[str, Any]) -> bool:
    """Ready and not being deleted."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return (pod["metadata"].get("deletionTimestamp") is None
            and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions))


async def pod_log(api: ApiClient, namespace: str, pod: str, tail: int | None = None) -> str:
    """The pod's (only) container's log, its last ``tail`` lines when given."""
    query = [("tailLines", tail)] if tail is not None else None
    status, raw, _ = await raw_request(
        api, "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", query=query,
        request_timeout=30)
    assert status == 200, (status, raw[:300])
    return raw.decode(errors="replace")


def waiting(pod: dict[str, Any]) -> list[tuple[str, str]]:
    """(reason, message) of each of the pod's containers that is not running yet."""
    found = []
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (status.get("state") or {}).get("waiting")
        if state:
            found.append((state.get("reason", ""), state.get("message", "")))
    return found


def rolled_out(dep: dict[str, Any]) -> bool:
    """What ``kubectl rollout status`` waits for."""
    spec, status = dep["spec"], dep.get("status") or {}
    want = spec.get("replicas", 1)
    return (status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == want
            and status.get("replicas", 0) == want
            and status.get("availableReplicas", 0) == want)


async def wait_rolled_out(api: ApiClient, namespace: str, names: Sequence[str],
                          within: float = ROLLOUT_TIMEOUT) -> None:
    """Every Deployment in ``names`` rolled out; fails early when a pod's image is
    missing from the node, and with every container's waiting reason on timeout."""
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"

    async def hopeless() -> list[str]:
        return [f"{p['metadata']['name']}: {reason} {message}"
                for p in await pods(api, namespace)
                for reason, message in waiting(p) if reason in HOPELESS]

    async def done() -> bool:
        stuck = await hopeless()
        assert not stuck, "pods cannot start (is the image imported into the node?):\n" + \
            "\n".join(stuck)
        return all([rolled_out(await request_json(api, "GET", f"{base}/{n}")) for n in names])

    try:
        await wait_for(done, within, f"rolled out: {list(names)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await not_ready_report(api, namespace)}") from None


async def not_ready_report(api: ApiClient, namespace: str, tail: int = 20) -> str:
    """Each pod that is not Ready: its containers' states and restarts, and the
    last ``tail`` lines of its log (what explains a pod that runs but never
    becomes Ready)."""
    lines = []
    for pod in await pods(api, namespace):
        if ready(pod):
            continue
        name = pod["metadata"]["name"]
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        lines.append(f"{name}: " + "; ".join(
            f"{sorted(s.get('state') or {})} restarts={s.get('restartCount', 0)}"
            for s in statuses))
        if statuses and "waiting" not in (statuses[0].get("state") or {}):
            try:
                lines += ["    " + line for line in
                          (await pod_log(api, namespace, name, tail)).splitlines()]
            except (AssertionError, KubeError) as exc:
                lines.append(f"    (no log: {exc})")
    return "\n".join(lines) or "(every pod is Ready)"


async def service_url(api: ApiClient, namespace: str, name: str) -> str:
    """``http://<ClusterIP>:<first port>`` of a Service (kube-proxy routes it on the host)."""
    svc = await request_json(api, "GET", f"/api/v1/namespaces/{namespace}/services/{name}")
    return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


@dataclass(frozen=True)
class PushTiming:
    accepted_s: float  # from the first attempt to the 202
    refreshed_s: float  # from the 202 to the refresh annotation seen


async def push_refreshes(api: ApiClient, ingress_url: str, prefix: str,
                         within: float = 60) -> PushTiming:
    """A Quay push sent to ``ingress_url`` refreshes the Warehouse it matches.

    Creates a project (namespace ``<prefix>-…``, receiver Secret, ProjectConfig,
    Warehouses), posts the push until it is accepted (the ingress answers 404
    until it has loaded the new receiver, and a Service's endpoints may lag its
    pods' readiness), waits for the matching Warehouse's refresh annotation, and
    deletes the namespace. Fails when either takes longer than ``within``.
    """
    project = await create_project(api, Plan(repos=1, unique=1), prefix=prefix)
    try:
        repository, tag = project.plan.push(0)
        url = ingress_url + project.expected_path
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            async def accepted() -> bool:
                try:
                    async with http.post(url, data=payload(repository, tag)) as resp:
                        return resp.status == 202
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await wait_for(accepted, within, "accepted by the ingress Service")
        accepted_at = time.monotonic()
        warehouse = WAREHOUSE.path(project.namespace, project.plan.expected(0)[0])

        async def refreshed() -> bool:
            obj = await request_json(api, "GET", warehouse)
            return bool((obj["metadata"].get("annotations") or {}).get(REFRESH_ANNOTATION))

        await wait_for(refreshed, within, "refreshed")
        return PushTiming(round(accepted_at - started, 1),
                          round(time.monotonic() - accepted_at, 1))
    finally:
        await delete_namespace(api, project.namespace)
