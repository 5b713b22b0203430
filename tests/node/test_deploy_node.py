"""deploy/ on a real Kubernetes node: pods, identities, hardening, pushes, rollouts.

The devstack's node (``Devstack(node=True)``: containerd, kubelet, kube-proxy,
kube-scheduler) runs the manifests of ``deploy/`` as they are, with only what
a kustomize overlay for this cluster would change: Kafka's address (the
devstack broker's listener on the node bridge), single-broker replication and
a topic prefix of this run. The tests run in file order and share the rollout:

1. the node is Ready with the bridge address as its InternalIP;
2. every pod of every Deployment becomes Ready;
3. at the runtime (the container's init process as the kernel sees it): uid
   10001, no capabilities, no_new_privs, seccomp, a read-only root that refuses
   a write while ``/tmp`` accepts one;
4. each pod's mounted token is its own ServiceAccount (TokenReview), and with
   the router's binding removed a new router pod's own log shows the 403 that
   names its ServiceAccount;
5. a Quay push sent to the ingress Service refreshes a Warehouse;
6. ``rollout restart`` of each Deployment, then pods deleted at random, under
   steady push load: every acknowledged push refreshes its Warehouses (counted
   as the fault suite counts);
7. ``down`` leaves no process, link, mount, cgroup or iptables chain behind
   (marked ``node_down``: it runs after every other node test, whichever
   module, since they all share the session's stack).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import raw_request, request_json
from pushrelay_devstack import containerd, hostnet, node
from pushrelay_devstack.stack import Devstack
from tests.faults.harness import (
    LoadGen,
    Project,
    RefreshTracker,
    Row,
    account,
    create_project,
    pairs_of,
    settle,
)
from tests.faults.plan import Plan
from tests.integration.test_deploy_rbac import (
    NS,
    SERVICES,
    load_manifests,
    sa_user,
    server_side_apply,
)
from tests.node.cluster import (
    pod_log,
    pods,
    push_refreshes,
    ready,
    service_url,
    wait_for,
    wait_rolled_out,
)
from tests.node.conftest import record

pytestmark = [pytest.mark.integration, pytest.mark.node]

DEPLOYMENTS = [f"pushrelay-{s}" for s in SERVICES]
UID = 10001


def overlay(objects: list[dict[str, Any]], bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    """What an overlay for this cluster changes: the ConfigMap's Kafka settings."""
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "pushrelay-config":
            obj["data"].update({
                "PUSHRELAY_KAFKA_BOOTSTRAP": bootstrap,
                "PUSHRELAY_TOPIC_REPLICATION": "1",
                "PUSHRELAY_TOPIC_PARTITIONS": "4",
                "PUSHRELAY_TOPIC_PREFIX": prefix,
            })
    return objects


def container_pid(stack: Devstack, pod: dict[str, Any]) -> int:
    """The host PID of the pod's (only) container's init process, from containerd."""
    cid = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    out = containerd.ctr(stack.paths.root, "tasks", "ls", timeout=30)
    for line in out.stdout.decode().splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return int(fields[1])
    raise AssertionError(f"no task for container {cid}")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def root_mount_options(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return fields[5].split(",")
    raise AssertionError("no root mount")


def write_inside(pid: int, path: str) -> subprocess.CompletedProcess[str]:
    """Create ``path`` inside the container's mount namespace, as its uid."""
    return subprocess.run(
        ["nsenter", f"--target={pid}", "--mount", f"--setuid={UID}", f"--setgid={UID}",
         "--", "/bin/sh", "-c", f": > {path}"],
        capture_output=True, text=True, check=False, timeout=30)


def mounted_token(pid: int) -> str:
    """The ServiceAccount token the kubelet projected into the container (read in
    its mount namespace: ``/var/run`` may be a symlink there)."""
    out = subprocess.run(
        ["nsenter", f"--target={pid}", "--mount", "--", "/bin/cat",
         "/var/run/secrets/kubernetes.io/serviceaccount/token"],
        capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def deployed(node_stack: Devstack, node_kube: ApiClient, product_image: str) -> str:
    """deploy/ applied (server-side) with the overlay; returns the topic prefix."""
    prefix = f"node-{uuid.uuid4().hex[:6]}."
    bootstrap = node_stack.env()["PUSHRELAY_DEVSTACK_NODE_KAFKA_BOOTSTRAP"]
    started = time.monotonic()
    for obj in overlay(load_manifests(), bootstrap, prefix):
        await server_side_apply(node_kube, obj)
    await wait_rolled_out(node_kube, NS, DEPLOYMENTS)
    record("deploy_to_all_pods_ready_s", round(time.monotonic() - started, 1))
    return prefix


@pytest.fixture(scope="module")
async def ingress_url(node_kube: ApiClient, deployed: str) -> str:
    return await service_url(node_kube, NS, "pushrelay-ingress")


# --- tests ------------------------------------------------------------------------------


async def test_node_ready_on_the_bridge(node_stack: Devstack, node_kube: ApiClient) -> None:
    obj = await request_json(node_kube, "GET", f"/api/v1/nodes/{node.NODE_NAME}")
    conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    addresses = {a["type"]: a["address"] for a in obj["status"]["addresses"]}
    assert addresses["InternalIP"] == hostnet.GATEWAY
    rss = {}
    for status in node_stack.status():
        if status.pid:
            rss[status.name] = int(proc_status(status.pid)["VmRSS"].split()[0]) // 1024
    record("rss_mb_after_up", rss)
    record("rss_mb_total_after_up", sum(rss.values()))


async def test_every_pod_ready(node_kube: ApiClient, deployed: str) -> None:
    for service in SERVICES:
        found = await pods(node_kube, NS, service)
        assert len(found) == 2 and all(ready(p) for p in found), service
        assert all(p["spec"]["nodeName"] == node.NODE_NAME for p in found)


async def test_hardening_enforced_at_the_runtime(node_stack: Devstack, node_kube: ApiClient,
                                                 deployed: str) -> None:
    for service in SERVICES:
        pod = (await pods(node_kube, NS, service))[0]
        pid = container_pid(node_stack, pod)
        status = proc_status(pid)
        assert status["Uid"].split() == [str(UID)] * 4, status["Uid"]  # runAsNonRoot/runAsUser
        assert status["Gid"].split() == [str(UID)] * 4, status["Gid"]
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, (service, caps, status[caps])  # drop: ALL
        assert status["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
        assert status["Seccomp"] == "2"  # RuntimeDefault: a filter is installed
        assert "ro" in root_mount_options(pid)  # readOnlyRootFilesystem
        refused = write_inside(pid, "/pushrelay-probe")
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
        allowed = write_inside(pid, "/tmp/pushrelay-probe")  # the emptyDir
        assert allowed.returncode == 0, allowed.stderr


async def test_pods_use_their_own_service_account(node_stack: Devstack, node_kube: ApiClient,
                                                  deployed: str) -> None:
    for service in SERVICES:
        pod = (await pods(node_kube, NS, service))[0]
        pid = container_pid(node_stack, pod)
        token = mounted_token(pid)
        review = await request_json(
            node_kube, "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": {"token": token}})
        user = review["status"]["user"]
        assert review["status"]["authenticated"] is True
        assert user["username"] == sa_user(service)
        assert user["extra"]["authentication.kubernetes.io/pod-name"] == [pod["metadata"]["name"]]


async def test_forbidden_call_refused_in_the_pods_own_log(node_kube: ApiClient,
                                                          deployed: str) -> None:
    """Without its ClusterRoleBinding, a new router pod is refused as its ServiceAccount."""
    binding = next(o for o in load_manifests() if o["kind"] == "ClusterRoleBinding"
                   and o["metadata"]["name"] == "pushrelay-router")
    path = f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{binding['metadata']['name']}"
    await request_json(node_kube, "DELETE", path)
    try:
        victim = (await pods(node_kube, NS, "router"))[0]["metadata"]["name"]
        await request_json(node_kube, "DELETE", f"/api/v1/namespaces/{NS}/pods/{victim}")

        async def refused_in_log() -> str | None:
            for pod in await pods(node_kube, NS, "router"):
                name = pod["metadata"]["name"]
                statuses = (pod.get("status") or {}).get("containerStatuses") or []
                if name == victim or not statuses or "running" not in statuses[0]["state"]:
                    continue
                text = await pod_log(node_kube, NS, name)
                for line in text.splitlines():
                    if "forbidden" in line and sa_user("router") in line:
                        return line
            return None

        line = await wait_for(refused_in_log, 180, "a 403 in the new router pod's log")
        assert "warehouses" in line, line
    finally:
        await server_side_apply(node_kube, binding)
    await wait_rolled_out(node_kube, NS, ["pushrelay-router"])


async def test_push_through_the_service_refreshes(node_kube: ApiClient, ingress_url: str) -> None:
    timing = await push_refreshes(node_kube, ingress_url, prefix="node")
    record("deploy_push_accepted_s", timing.accepted_s)
    record("deploy_push_to_refresh_s", timing.refreshed_s)


async def restart(api: ApiClient, name: str) -> None:
    """``kubectl rollout restart``: a new pod-template annotation."""
    stamp = dt.datetime.now(dt.UTC).isoformat()
    patch = {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": stamp}}}}}
    status, raw, _ = await raw_request(
        api, "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{name}", body=patch,
        content_type="application/strategic-merge-patch+json", request_timeout=30)
    assert status == 200, raw[:300]


async def test_rollouts_and_pod_deletions_under_load_lose_nothing(
    node_kube: ApiClient, ingress_url: str, tmp_path: Path
) -> None:
    plan = Plan(repos=4, unique=400)
    project: Project = await create_project(node_kube, plan, prefix="node-load")
    tracker = RefreshTracker(node_kube, project.namespace)
    await tracker.start()
    url = ingress_url + project.expected_path
    async with aiohttp.ClientSession() as http:
        async def served() -> bool:
            async with http.post(url, data=b"{}") as resp:
                return resp.status == 400  # the receiver exists (the body is invalid)
        await wait_for(served, 60, "receiver served")
    rate = float(os.environ.get("PUSHRELAY_NODE_LOAD_RATE", "10"))
    load = LoadGen(url, plan, tmp_path, rate=rate, duration=1800)
    load.start()
    started = time.monotonic()
    try:
        for name in DEPLOYMENTS:
            t0 = time.monotonic()
            await restart(node_kube, name)
            await asyncio.sleep(1)  # let the controller observe the new generation
            await wait_rolled_out(node_kube, NS, [name])
            record(f"rollout_restart_{name}_s", round(time.monotonic() - t0, 1))
        rng = random.Random(os.environ.get("PUSHRELAY_NODE_SEED", "14"))
        deleted = []
        for _ in range(4):
            victim = rng.choice([p for p in await pods(node_kube, NS) if ready(p)])
            name = victim["metadata"]["name"]
            deleted.append(name)
            await request_json(node_kube, "DELETE", f"/api/v1/namespaces/{NS}/pods/{name}")
            await asyncio.sleep(1)
            await wait_rolled_out(node_kube, NS, DEPLOYMENTS)
        record("pods_deleted_at_random", deleted)
        pushes = await load.finish()
    finally:
        load.close()
    await settle(tracker, pairs_of(plan, pushes), within=180)
    await tracker.stop()
    row = account(Row("node rollouts + deletions"), plan, pushes, tracker, None)
    row.duration_s = round(time.monotonic() - started, 1)
    record("load", {k: v for k, v in row.as_dict().items() if k != "passed"})
    assert row.acked > 0
    assert row.lost == 0, row.notes
    with contextlib.suppress(Exception):
        await request_json(node_kube, "DELETE", f"/api/v1/namespaces/{project.namespace}")


def _leftovers(state: Path) -> dict[str, Any]:
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if str(state).encode() in cmdline:
                    procs.append(int(entry.name))
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(str(state))]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True,
                           check=False).stdout
    chains = sorted({w for w in rules.split() if w.startswith(("KUBE-", hostnet.FENCE))})
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")]
    return {"processes": procs, "bridge": hostnet.bridge_exists(), "mounts": mounts,
            "chains": chains, "cgroups": cgroups}


@pytest.mark.node_down
def test_down_leaves_nothing_behind(node_stack: Devstack) -> None:
    forward_before = Path(node_stack.paths.root / "node" / "ip_forward.saved").read_text()
    started = time.monotonic()
    node_stack.down()
    record("down_s", round(time.monotonic() - started, 1))
    assert _leftovers(node_stack.paths.root) == {
        "processes": [], "bridge": False, "mounts": [], "chains": [], "cgroups": []}
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == forward_before.strip()
