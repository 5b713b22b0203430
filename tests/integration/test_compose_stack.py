"""compose/ for real: Kafka and the three services as containers on a real engine.

``docker compose up`` (Compose v2 built from its Go module, the host-network
override, the locally built images) runs against the devstack's API server; a
Quay push through the ingress container refreshes a Warehouse; scaling to three
routers and two refreshers while pushes keep arriving loses none of them
(every push's Warehouse is refreshed, and every replica's log shows its share
of the partitions); ``docker compose down`` leaves no container, network or volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.receivers import receiver_path
from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.resources import WAREHOUSE
from pushrelay_devstack import compose, docker, images
from pushrelay_devstack.procs import free_port
from tests.integration.conftest import eventually
from tests.integration.test_e2e import (
    RECEIVER,
    REPO,
    create_project,
    post,
    quay_push,
    refresh_value,
)

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"e2e-secret-value"  # the one create_project stores
SCALED = {"router": 3, "refresher": 2}
PARTITIONS = 6  # PUSHRELAY_TOPIC_PARTITIONS in compose/docker-compose.yml
MAX_PUSHES = 80
PUSHES_AFTER_SCALING = 15


def _progress(msg: str) -> None:
    print(f"devstack: {msg}", file=sys.stderr, flush=True)


def assignments(project: compose.Project, service: str) -> list[set[str]]:
    """Each replica's latest partition assignment, from its JSON log."""
    found = []
    for cid in project.run(["ps", "-q", service]).stdout.split():
        proc = project.engine.run(["logs", cid])
        latest: set[str] = set()
        for line in (proc.stdout + proc.stderr).decode(errors="replace").splitlines():
            if line.startswith("{") and "partitions assigned" in line:
                latest = {str(p) for p in orjson.loads(line).get("partitions", [])}
        found.append(latest)
    return found


async def create_warehouses(kube: ApiClient, namespace: str, count: int) -> list[str]:
    names = [f"w{i:02d}" for i in range(count)]
    for name in names:
        await request_json(kube, "POST", WAREHOUSE.path(namespace), body={
            "apiVersion": WAREHOUSE.api_version, "kind": "Warehouse",
            "metadata": {"name": name},
            "spec": {"subscriptions": [{"image": {"repoURL": f"quay.io/compose/{name}"}}]}})
    return names


async def refreshed(kube: ApiClient, namespace: str) -> set[str]:
    listing = await request_json(kube, "GET", WAREHOUSE.path(namespace))
    return {item["metadata"]["name"] for item in listing.get("items", [])
            if (item["metadata"].get("annotations") or {}).get("kargo.akuity.io/refresh")}


async def test_compose_up_push_scale_down(
    kube: ApiClient, namespace: str, devstack_env: dict[str, str], topic_prefix: str,
    tmp_path: Path,
) -> None:
    engine = docker.engine_up(_progress)
    await asyncio.to_thread(images.ensure_kafka, engine, _progress)
    await asyncio.to_thread(images.ensure_pushrelay, engine, ROOT, _progress)
    binary = await asyncio.to_thread(compose.ensure_binary, _progress)

    kafka_port, ingress_port = free_port(), free_port()
    env = {
        **compose.devstack_env(Path(devstack_env["KUBECONFIG"]), tmp_path),
        "KAFKA_HOST_PORT": str(kafka_port),
        "KAFKA_CONTROLLER_HOST_PORT": str(free_port()),
        "PUSHRELAY_INGRESS_HOST_PORT": str(ingress_port),
        "PUSHRELAY_INGRESS_HEALTH_HOST_PORT": str(free_port()),
        "PUSHRELAY_BASE_URL": f"http://127.0.0.1:{ingress_port}",
        "PUSHRELAY_TOPIC_PREFIX": topic_prefix,
        "PUSHRELAY_REFRESH_MIN_INTERVAL": "0.5",
        # This ingress watches the whole shared devstack: leave every other
        # test's ProjectConfig status to that test's own ingress.
        "PUSHRELAY_WRITE_STATUS": "false",
    }
    project = compose.Project(engine, binary, f"pr{uuid.uuid4().hex[:8]}",
                              ROOT / "compose", env, log=tmp_path / "compose.log")
    await create_project(kube, namespace)
    names = await create_warehouses(kube, namespace, MAX_PUSHES)
    try:
        await asyncio.to_thread(project.run, ["up", "-d", "--no-build", "--wait",
                                              "--wait-timeout", "300"], timeout=600)

        # Computed, not read from the ProjectConfig's status: on a shared devstack
        # another ingress may have written its own base URL there first.
        path = receiver_path("/", namespace, RECEIVER, SECRET)
        url = f"http://127.0.0.1:{ingress_port}{path}"

        async def accepted() -> bool:  # 404 until the ingress has synced the receiver
            status, _ = await post(url, quay_push(REPO, ["v1.0.1"]))
            return status == 202
        await eventually(accepted, within=120, interval=0.5)
        assert await eventually(lambda: refresh_value(kube, namespace), within=60)

        # Scale out while pushes keep coming; each push names its own Warehouse.
        scaled = asyncio.Event()
        sent: list[str] = []

        async def pusher() -> None:
            after = 0
            for name in names:
                status, body = await post(url, quay_push(f"quay.io/compose/{name}", ["v1.0.0"]))
                assert status == 202, body
                sent.append(name)
                after += scaled.is_set()
                if after >= PUSHES_AFTER_SCALING:
                    return
                await asyncio.sleep(0.4)  # a steady trickle, not a synchronization

        pushing = asyncio.create_task(pusher())
        scale = [f"--scale={svc}={n}" for svc, n in SCALED.items()]
        await asyncio.to_thread(project.run, ["up", "-d", "--no-build", "--no-recreate",
                                              *scale, "--wait", "--wait-timeout", "300"],
                                timeout=600)
        scaled.set()
        await pushing

        async def all_refreshed() -> bool:
            return set(sent) <= await refreshed(kube, namespace)
        with contextlib.suppress(TimeoutError):
            await eventually(all_refreshed, within=300, interval=0.5)
        lost = set(sent) - await refreshed(kube, namespace)
        print(f"compose: {len(sent)} pushes while scaling, "
              f"{len(sent) - len(lost)} refreshed, lost {len(lost)}")
        assert not lost, sorted(lost)

        # Every replica holds partitions, and together exactly the topic's (6).
        def rebalanced() -> bool:
            for svc, n in SCALED.items():
                held = assignments(project, svc)
                if len(held) != n or not all(held):
                    return False
                if sum(map(len, held)) != PARTITIONS or len(set().union(*held)) != PARTITIONS:
                    return False
            return True
        await eventually(lambda: asyncio.to_thread(rebalanced), within=120, interval=2)
    finally:
        await asyncio.to_thread(project.run, ["down", "--volumes", "--remove-orphans",
                                              "--timeout", "30"], check=False, timeout=300)
    assert project.resources() == {"containers": [], "networks": [], "volumes": []}
