"""The product end to end: real processes, real Kafka, real kube-apiserver.

A push to a receiver refreshes the right Warehouse whether the stages run as
three processes or as ``pushrelay all-in-one``; after the services restart,
``pushrelay receivers`` and ``pushrelay deliveries`` still show a delivery that
was accepted and refreshed, one without tags (every subscriber refreshed), two
that matched nothing (and why), and one that was rejected.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.deliveries import NO_TAGS
from pushrelay.infra.kube.client import get_object, request_json
from pushrelay.infra.kube.resources import PROJECT_CONFIG, REFRESH_ANNOTATION, SECRET, WAREHOUSE
from tests.integration.conftest import eventually

RECEIVER = "quay"
REPO = "quay.io/e2e/app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(devstack_env: dict[str, str], topic_prefix: str, port: int,
                health_port: int) -> dict[str, str]:
    return {
        **os.environ, **devstack_env,
        "PUSHRELAY_TOPIC_PREFIX": topic_prefix,
        "PUSHRELAY_TOPIC_PARTITIONS": "2",
        "PUSHRELAY_INGRESS_HOST": "127.0.0.1",
        "PUSHRELAY_INGRESS_PORT": str(port),
        "PUSHRELAY_BASE_URL": f"http://127.0.0.1:{port}",
        "PUSHRELAY_HEALTH_HOST": "127.0.0.1",
        "PUSHRELAY_HEALTH_PORT": str(health_port),
        "PUSHRELAY_WRITE_STATUS": "true",
        "PUSHRELAY_ROUTER_GROUP": f"{topic_prefix}router",
        "PUSHRELAY_REFRESHER_GROUP": f"{topic_prefix}refresher",
        "PUSHRELAY_REFRESH_MIN_INTERVAL": "0.5",
        "PUSHRELAY_LOG_LEVEL": "WARNING",
    }


@asynccontextmanager
async def running(commands: Sequence[Sequence[str]], env: dict[str, str]) -> AsyncIterator[None]:
    """Run ``commands``; the first (the ingress, or all-in-one) owns the health port
    whose ``/readyz`` is awaited, the others bind ephemeral ones."""
    logs = [tempfile.TemporaryFile() for _ in commands]
    envs = [env] + [{**env, "PUSHRELAY_HEALTH_PORT": "0"}] * (len(commands) - 1)
    procs = [await asyncio.create_subprocess_exec(*cmd, env=e, stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=log)
             for cmd, e, log in zip(commands, envs, logs, strict=True)]
    port = env["PUSHRELAY_HEALTH_PORT"]
    try:
        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(
                        f"http://127.0.0.1:{port}/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False
        await eventually(ready, within=60, interval=0.2)
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            codes = [await proc.wait() for proc in procs]
        errors = []
        for log in logs:
            log.seek(0)
            errors.append(log.read().decode(errors="replace")[-2000:])
            log.close()
        assert codes == [0] * len(procs), f"graceful stop failed: {codes}\n{errors}"


async def create_project(kube: ApiClient, namespace: str) -> None:
    await request_json(kube, "POST", SECRET.path(namespace), body={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "quay-secret"},
        "data": {"secret": base64.b64encode(b"e2e-secret-value").decode()}})
    await request_json(kube, "POST", PROJECT_CONFIG.path(namespace), body={
        "apiVersion": PROJECT_CONFIG.api_version, "kind": "ProjectConfig",
        "metadata": {"name": namespace},
        "spec": {"webhookReceivers": [
            {"name": RECEIVER, "quay": {"secretRef": {"name": "quay-secret"}}}]}})
    await request_json(kube, "POST", WAREHOUSE.path(namespace), body={
        "apiVersion": WAREHOUSE.api_version, "kind": "Warehouse",
        "metadata": {"name": "app"},
        "spec": {"subscriptions": [{"image": {"repoURL": REPO, "constraint": "^1.0.0"}}]}})


async def receiver_url(kube: ApiClient, namespace: str) -> str:
    async def url() -> str | None:
        config = await get_object(kube, PROJECT_CONFIG, namespace, namespace)
        for entry in (config.get("status") or {}).get("webhookReceivers") or []:
            if entry.get("name") == RECEIVER:
                return str(entry["url"])
        return None
    return str(await eventually(url, within=30))


async def refresh_value(kube: ApiClient, namespace: str) -> str | None:
    warehouse = await get_object(kube, WAREHOUSE, "app", namespace)
    return ((warehouse.get("metadata") or {}).get("annotations") or {}).get(REFRESH_ANNOTATION)


async def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body) as resp:
        return resp.status, await resp.json(content_type=None)


def quay_push(repo: str, tags: list[str]) -> bytes:
    return orjson.dumps({"docker_url": repo, "updated_tags": tags, "name": "app",
                         "repository": repo.split("/", 1)[1], "namespace": "e2e"})


def cli(args: list[str], env: dict[str, str]) -> Any:
    out = subprocess.run([sys.executable, "-m", "pushrelay", *args, "-o", "json"], env=env,
                         capture_output=True, timeout=60, check=True)
    return orjson.loads(out.stdout)


SEPARATE = [[sys.executable, "-m", name] for name in ("ingress", "router", "refresher")]
ALL_IN_ONE = [[sys.executable, "-m", "pushrelay", "all-in-one"]]


@pytest.mark.parametrize(("commands", "bus"), [
    (SEPARATE, "kafka"), (ALL_IN_ONE, "kafka"), (ALL_IN_ONE, "embedded"),
], ids=["separate", "all-in-one", "all-in-one-embedded"])
async def test_push_refreshes_and_deliveries_survive_restart(
    kube: ApiClient, namespace: str, devstack_env: dict[str, str], topic_prefix: str,
    commands: list[list[str]], bus: str, tmp_path: Path,
) -> None:
    port = free_port()
    env = service_env(devstack_env, topic_prefix, port, free_port())
    if bus == "embedded":  # no Kafka at all: the CLI reads the log beside the process
        env.update(PUSHRELAY_BUS="embedded", PUSHRELAY_DATA_DIR=str(tmp_path / "data"),
                   PUSHRELAY_KAFKA_BOOTSTRAP="127.0.0.1:9")
    await create_project(kube, namespace)
    async with running(commands, env):
        url = await receiver_url(kube, namespace)
        assert url.startswith(f"http://127.0.0.1:{port}/quay/")

        status, body = await post(url, quay_push(REPO, ["v1.2.0"]))
        assert status == 202, body
        accepted = body["delivery"]
        assert await eventually(lambda: refresh_value(kube, namespace), within=30)

        status, body = await post(url, quay_push("quay.io/e2e/other", ["v1.0.0"]))
        assert status == 202, body
        unmatched = body["delivery"]

        status, body = await post(url, quay_push(REPO, ["v2.0.0"]))
        assert status == 202, body
        unqualified = body["delivery"]

        status, body = await post(url, orjson.dumps({"docker_url": REPO}))  # no tags
        assert status == 202, body
        untagged = body["delivery"]

        status, body = await post(url, b'{"docker_url": 42}')
        assert status == 400 and body == {"error": "invalid request body"}

        def outcomes() -> dict[str, str]:
            rows = cli(["deliveries", "-n", namespace, "--limit", "10"], env)
            return {row["delivery"]: row["summary"] for row in rows}

        def settled() -> bool:
            got = outcomes()
            return (len(got) == 5 and got[accepted].startswith("refreshed")
                    and got[untagged].startswith("refreshed"))
        await eventually(lambda: asyncio.to_thread(settled), within=30, interval=0.5)

    # Everything stopped; start again and ask what happened.
    async with running(commands, env):
        rows = await asyncio.to_thread(cli, ["deliveries", "-n", namespace], env)
        by_id = {row["delivery"]: row for row in rows}
        assert by_id[accepted]["summary"] == "refreshed 1/1"
        assert by_id[accepted]["matched"] == [f"{namespace}/app"]
        assert by_id[unmatched]["summary"] == (
            "matched 0 warehouses: no Warehouse in scope subscribes to this repository")
        why = by_id[unqualified]["summary"]
        assert why.startswith("matched 0 warehouses: 1 subscription(s), but no pushed tag "
                              f"qualified (first: {namespace}/app subscription #0: tag "
                              "'v2.0.0': "), why
        assert "does not satisfy" in why
        assert why.endswith(f"see `pushrelay explain {REPO} v2.0.0 --project {namespace}`")
        assert by_id[untagged]["summary"] == f"refreshed 1/1 ({NO_TAGS})"
        [rejected] = [row for row in rows if row["outcome"] == "rejected"]
        assert rejected["summary"].startswith("rejected: invalid body")
        assert {row["receiver"] for row in rows} == {RECEIVER}

        receivers = await asyncio.to_thread(cli, ["receivers", "-n", namespace], env)
        [receiver] = receivers
        assert receiver["served"] and receiver["url"] == url
        assert receiver["last_delivery"]["delivery"] in by_id
