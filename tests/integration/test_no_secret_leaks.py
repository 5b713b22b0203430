"""No secret and no full receiver hash leaves the services: logs, metrics, Events, topics.

The three services run as processes at DEBUG level (JSON logs for two, text for
one) with known secrets, and get everything that makes them talk: accepted,
invalid, unknown-hash and wrong-method requests, a secret rotation (old URL
dropped, new URL served), an unserved receiver, a refresh. Then every byte they
produced — their whole stdout/stderr, each ``/metrics`` page, every Kubernetes
Event in the namespace, every message on the deliveries and dead-letter topics —
is searched for each secret (raw and base64) and for any 9 consecutive
characters of a receiver hash (the services may show 8, never more).

``status.webhookReceivers`` is the one place where the full URL is written on
purpose (Kargo writes it there too); it is not searched.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.resources import WAREHOUSE
from pushrelay_devstack.procs import free_port
from tests.integration.conftest import eventually
from tests.integration.test_ingress_flow import (
    PAYLOAD,
    create_project_config,
    dumps,
    expected_path,
    put_secret,
    quay_receiver,
)

ROOT = Path(__file__).resolve().parents[2]


class Service:
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = free_port()  # where requests go (the ingress's public port)
        self.health_port = free_port() if name == "ingress" else self.port
        self.env = {**env, "PUSHRELAY_HEALTH_PORT": str(self.health_port)}
        if name == "ingress":
            self.env["PUSHRELAY_INGRESS_PORT"] = str(self.port)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", self.name], cwd=ROOT,
                                         env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def get(self, path: str) -> tuple[int, str]:
        """GET on the health port (``/readyz``, ``/metrics``)."""
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{self.health_port}{path}") as resp:
                return resp.status, await resp.text()
        except aiohttp.ClientError:
            return 0, ""


@asynccontextmanager
async def services(devstack_env: dict[str, str], workdir: Path, prefix: str,
                   ) -> AsyncIterator[dict[str, Service]]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("PUSHRELAY_") and k != "KUBECONFIG"}
    env = {**base, "KUBECONFIG": devstack_env["KUBECONFIG"],
           "PUSHRELAY_KAFKA_BOOTSTRAP": devstack_env["PUSHRELAY_KAFKA_BOOTSTRAP"],
           "PUSHRELAY_TOPIC_PREFIX": prefix, "PUSHRELAY_TOPIC_PARTITIONS": "1",
           "PUSHRELAY_ROUTER_GROUP": prefix + "router",
           "PUSHRELAY_REFRESHER_GROUP": prefix + "refresher",
           "PUSHRELAY_INGRESS_HOST": "127.0.0.1", "PUSHRELAY_HEALTH_HOST": "127.0.0.1",
           "PUSHRELAY_WRITE_STATUS": "true", "PUSHRELAY_LOG_LEVEL": "DEBUG",
           "PUSHRELAY_REFRESH_MIN_INTERVAL": "0.2"}
    procs = {
        "ingress": Service("ingress", {**env, "PUSHRELAY_LOG_FORMAT": "json"},
                           workdir / "ingress.log"),
        "router": Service("router", {**env, "PUSHRELAY_LOG_FORMAT": "text"},
                          workdir / "router.log"),
        "refresher": Service("refresher", {**env, "PUSHRELAY_LOG_FORMAT": "json"},
                             workdir / "refresher.log"),
    }
    procs["ingress"].env["PUSHRELAY_BASE_URL"] = procs["ingress"].url
    for proc in procs.values():
        proc.start()
    try:
        for proc in procs.values():
            await eventually(lambda p=proc: _ready(p), within=90)
        yield procs
    finally:
        for proc in procs.values():
            if proc.proc is not None and proc.proc.poll() is None:
                proc.stop()


async def _ready(service: Service) -> bool:
    return (await service.get("/readyz"))[0] == 200


async def topic_text(bootstrap: str, topic: str) -> str:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        for _ in range(6):
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                out += [(r.key or b"").decode(errors="replace") + " " +
                        (r.value or b"").decode(errors="replace") for r in records]
    finally:
        await consumer.stop()
    return "\n".join(out)


def leaks(text: str, secrets: list[str], hashes: list[str]) -> list[str]:
    found = []
    for secret in secrets:
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            if form in text:
                found.append(f"secret {form[:4]}…")
    for digest in hashes:
        for i in range(len(digest) - 8):
            if digest[i:i + 9] in text:
                found.append(f"9+ characters of hash {digest[:4]}… at {i}")
                break
    return found


async def test_no_secret_or_full_hash_in_logs_metrics_events_or_topics(
        devstack_env: dict[str, str], kube: ApiClient, namespace: str,
        tmp_path: Path) -> None:
    old, new, other = (f"{w}-{uuid.uuid4().hex}" for w in ("old", "new", "other"))
    await put_secret(kube, namespace, "quay", {"secret": old})
    await put_secret(kube, namespace, "other", {"secret": other})
    await put_secret(kube, namespace, "broken", {"not-secret": other})
    await create_project_config(kube, namespace, [
        quay_receiver("main", "quay"), quay_receiver("second", "other"),
        quay_receiver("unserved", "broken")])
    repo = f"quay.io/{namespace}/app"
    await request_json(kube, "POST", WAREHOUSE.path(namespace), body={
        "apiVersion": WAREHOUSE.api_version, "kind": "Warehouse", "metadata": {"name": "w"},
        "spec": {"subscriptions": [{"image": {"repoURL": repo}}]}})
    old_path = expected_path(namespace, "main", old)
    new_path = expected_path(namespace, "main", new)
    other_path = expected_path(namespace, "second", other)
    prefix = f"leak{uuid.uuid4().hex[:6]}."
    body = dumps({**PAYLOAD, "docker_url": repo, "updated_tags": ["1.0.0"]})
    async with services(devstack_env, tmp_path, prefix) as procs, \
            aiohttp.ClientSession() as http:
        base = procs["ingress"].url

        async def post(path: str, data: bytes = body, method: str = "POST") -> int:
            async with http.request(method, base + path, data=data) as resp:
                return resp.status

        assert await post(old_path) == 202
        assert await post(other_path) == 202
        assert await post(old_path, b"{not json") == 400
        assert await post(old_path, method="GET") == 405
        near_miss = old_path[:-1] + ("1" if old_path.endswith("0") else "0")
        assert await post(near_miss) == 404
        assert await post(old_path + "/x") == 404
        await put_secret(kube, namespace, "quay", {"secret": new})  # rotation

        async def rotated() -> bool:
            return await post(new_path) == 202
        await eventually(rotated, within=20)
        assert await post(old_path) == 404

        async def refreshed() -> bool:
            obj = await request_json(kube, "GET", WAREHOUSE.path(namespace, "w"))
            return bool(obj["metadata"].get("annotations") or {})
        await eventually(refreshed, within=30)
        await asyncio.sleep(6)  # let the Event recorders flush their aggregates
        texts = {f"{name} /metrics": (await proc.get("/metrics"))[1]
                 for name, proc in procs.items()}
        assert all(texts.values())
        codes = {name: proc.stop() for name, proc in procs.items()}
    assert codes == {"ingress": 0, "router": 0, "refresher": 0}, codes
    for name, proc in procs.items():
        texts[f"{name} log"] = proc.log.read_text(errors="replace")
    listing = await request_json(kube, "GET", f"/api/v1/namespaces/{namespace}/events")
    texts["Kubernetes Events"] = dumps(listing).decode()
    bootstrap = devstack_env["PUSHRELAY_KAFKA_BOOTSTRAP"]
    for topic in ("deliveries", "dead-letters", "push-events", "refresh-requests"):
        texts[f"topic {topic}"] = await topic_text(bootstrap, prefix + topic)
    assert "receiver not served" in texts["ingress log"]  # the logs did talk
    assert '"level":"debug"' in texts["ingress log"]
    secrets = [old, new, other]
    hashes = [p.rsplit("/", 1)[1] for p in (old_path, new_path, other_path)]
    assert any(h[:8] in texts["ingress log"] for h in hashes)  # 8 are shown, as documented
    found = {where: hits for where, text in texts.items()
             if (hits := leaks(text, secrets, hashes))}
    assert not found, found
    assert sum(len(t) for t in texts.values()) > 10_000  # we searched something real
