"""The ingress spool on the real devstack (docs/ingress.md, "The spool").

Kafka is made unreachable for real: either the ingress is pointed at a closed
port, or at a private single-node Kafka (test_ingress_outage's) that is started
and stopped by the test, so the shared devstack's broker is never disturbed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from kubernetes_asyncio.client import ApiClient

from ingress.app import DELIVERY_HEADER, SPOOLED_HEADER
from ingress.spool import GROUP, TOPIC, TP
from pushrelay.core.deliveries import fold
from pushrelay.core.events import decode_push, decode_refresh
from pushrelay.infra import metrics
from pushrelay.infra.bus.api import BusCorrupt, BusError
from pushrelay.infra.bus.kafka import KafkaBus
from pushrelay.infra.bus.store import LogStore
from pushrelay.infra.deliveries import read_facts
from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.resources import WAREHOUSE
from pushrelay.infra.settings import Settings
from pushrelay_devstack import procs
from router.service import RouterService
from tests.integration.conftest import eventually, make_settings
from tests.integration.kafka_support import PrivateKafka, private_kafka
from tests.integration.test_ingress_flow import (
    PAYLOAD,
    events_for,
    project_with_receiver,
    running_ingress,
)

ROOT = Path(__file__).resolve().parents[2]
REPOS = ("quay.io/spool/a", "quay.io/spool/b")


async def create_warehouse(kube: ApiClient, namespace: str, name: str, repo: str) -> None:
    await request_json(kube, "POST", WAREHOUSE.path(namespace), body={
        "apiVersion": WAREHOUSE.api_version, "kind": "Warehouse", "metadata": {"name": name},
        "spec": {"subscriptions": [{"image": {"repoURL": repo}}]}})


def push(repo: str, tag: str = "v1", **extra: Any) -> bytes:
    return orjson.dumps(dict(PAYLOAD, docker_url=repo, updated_tags=[tag], **extra))


async def post(http: ClientSession, port: int | None, path: str,
               body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(f"http://127.0.0.1:{port}{path}", data=body) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def readyz(http: ClientSession, port: int | None) -> tuple[int, dict[str, Any]]:
    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
        return resp.status, await resp.json()


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or None) or 0.0


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


@pytest.fixture
async def kafka_later(tmp_path: Path) -> AsyncIterator[PrivateKafka]:
    """A private Kafka, configured but not started: the test starts and stops it."""
    async with private_kafka(tmp_path / "kafka", started=False) as broker:
        yield broker


def spool_settings(devstack_env: dict[str, str], topic_prefix: str, spool_dir: Path,
                   bootstrap: str, **overrides: Any) -> Settings:
    return make_settings(dict(devstack_env, PUSHRELAY_KAFKA_BOOTSTRAP=bootstrap), topic_prefix,
                         spool_dir=str(spool_dir), publish_timeout=2.0,
                         kafka_request_timeout=5.0, topic_partitions=1, **overrides)


# ---- Kafka unreachable: 202 + spooled, ready and degraded, bounds -> 503 ---------

async def test_unreachable_kafka_spools_and_stays_ready(
        devstack_env: dict[str, str], topic_prefix: str, kube: ApiClient, namespace: str,
        http: ClientSession, tmp_path: Path) -> None:
    settings = spool_settings(devstack_env, topic_prefix, tmp_path / "spool",
                              f"127.0.0.1:{procs.free_port()}")  # nothing listens there
    path = await project_with_receiver(kube, namespace)
    appended = sample("pushrelay_spool_appended_total")
    async with running_ingress(settings) as service:  # ready without Kafka: it spools
        await eventually(lambda: service.registry.lookup(path), within=20)
        deliveries = []
        for n in range(5):
            status, body, headers = await post(http, service.port, path, push(REPOS[n % 2]))
            assert status == 202, body
            assert body == {"msg": "accepted", "delivery": headers[DELIVERY_HEADER]}
            assert headers[SPOOLED_HEADER] == "true"
            deliveries.append(body["delivery"])
        status, body = await readyz(http, service.health_port)
        assert status == 200 and body["status"] == "ready"
        note = body["degraded"]["ingress"]
        assert note.startswith("spooling: Kafka unavailable (") and "5 events, oldest" in note
        assert sample("pushrelay_spool_appended_total") - appended == 5
        assert sample("pushrelay_spool_depth") == 5
        assert sample("pushrelay_spool_bytes") > 0
        assert service.spool is not None and service.spool.state().depth == 5
        assert not service.crashed.is_set()

        async def spooled_event() -> list[dict[str, Any]]:  # one series on the config
            return [e for e in await events_for(kube, namespace)
                    if e.get("reason") == "DeliverySpooled"]
        [event] = await eventually(spooled_event, within=30, interval=0.5)
        assert event["type"] == "Warning" and "Kafka unavailable" in event["message"]
    # Stopped cleanly with Kafka down: every accepted push is still in the spool, in order.
    store = LogStore(tmp_path / "spool", max_bytes=settings.spool_max_bytes,
                     filename="spool.db")
    await store.open()
    try:
        records = await store.read(TOPIC, 0, 0, 100)
    finally:
        await store.close()
    assert [decode_push(r.value).delivery for r in records] == deliveries


async def test_spool_full_or_too_old_is_503(
        devstack_env: dict[str, str], topic_prefix: str, kube: ApiClient, namespace: str,
        http: ClientSession, tmp_path: Path) -> None:
    settings = spool_settings(devstack_env, topic_prefix, tmp_path / "spool",
                              f"127.0.0.1:{procs.free_port()}",
                              spool_max_bytes=1024 * 1024, spool_max_age=3.0)
    path = await project_with_receiver(kube, namespace)
    big = orjson.dumps(dict(PAYLOAD, updated_tags=[f"{i:0>250}" for i in range(2500)]))
    full, too_old = (sample("pushrelay_spool_refused_total", reason=r)
                     for r in ("full", "too_old"))
    async with running_ingress(settings) as service:
        await eventually(lambda: service.registry.lookup(path), within=20)
        status, _, headers = await post(http, service.port, path, big)  # ~640 KB
        assert status == 202 and headers[SPOOLED_HEADER] == "true"
        status, body, headers = await post(http, service.port, path, big)
        assert status == 503 and headers["Retry-After"] == "30" and "error" in body
        assert sample("pushrelay_spool_refused_total", reason="full") - full == 1
        # Kafka down and the spool refusing: no replica should get pushes it can't take.
        status, body = await readyz(http, service.health_port)
        assert status == 503 and "spool full" in body["reasons"]["ingress"], body
        status, _, _ = await post(http, service.port, path, push(REPOS[0]))  # still room
        assert status == 202
        status, body = await readyz(http, service.health_port)
        assert status == 200 and "spooling" in body["degraded"]["ingress"]

        async def refused_too_old() -> bool:  # the oldest spooled push turns 3 s old
            status, _, headers = await post(http, service.port, path, push(REPOS[0]))
            return status == 503 and headers.get("Retry-After") == "30"
        await eventually(refused_too_old, within=30, interval=0.5)
        assert sample("pushrelay_spool_refused_total", reason="too_old") - too_old >= 1
        assert service.spool is not None and service.spool.state().depth >= 2
        status, body = await readyz(http, service.health_port)
        assert status == 503 and "spool too old" in body["reasons"]["ingress"], body


# ---- a real outage: spool, restart, drain in order, route ----------------------------

async def test_outage_restart_drain_in_order_and_routed(
        devstack_env: dict[str, str], topic_prefix: str, kube: ApiClient, namespace: str,
        http: ClientSession, tmp_path: Path, kafka_later: PrivateKafka) -> None:
    settings = spool_settings(devstack_env, topic_prefix, tmp_path / "spool",
                              kafka_later.bootstrap)
    path = await project_with_receiver(kube, namespace)
    await create_warehouse(kube, namespace, "wh-a", REPOS[0])
    posted: list[tuple[str, str, bool]] = []  # (repo, delivery, spooled)
    drained = sample("pushrelay_spool_drained_total")

    async def post_one(port: int | None) -> bool:
        """One push (alternating repositories, a new tag each): whether it was spooled."""
        n = len(posted)
        repo = REPOS[n % 2]
        status, body, headers = await post(http, port, path, push(repo, f"1.0.{n}"))
        assert status == 202, body
        spooled = headers.get(SPOOLED_HEADER) == "true"
        posted.append((repo, body["delivery"], spooled))
        return spooled

    async def post_until_direct(port: int | None) -> None:
        """Quay-like: pushes keep coming while the spool drains; they queue behind
        it until it is empty, then go straight to Kafka."""
        async with asyncio.timeout(180):
            while await post_one(port):  # noqa: ASYNC110 - a sender, paced
                await asyncio.sleep(0.2)

    # Kafka down from the start: spooled; the ingress restarts with a non-empty spool.
    async with running_ingress(settings) as first:
        await eventually(lambda: first.registry.lookup(path), within=20)
        for _ in range(4):
            assert await post_one(first.port)
    async with running_ingress(settings) as second:
        await eventually(lambda: second.registry.lookup(path), within=20)
        status, body = await readyz(http, second.health_port)
        assert status == 200 and "4 events" in body["degraded"]["ingress"]
        assert await post_one(second.port)
        await asyncio.to_thread(kafka_later.start)
        await post_until_direct(second.port)
        for _ in range(2):
            assert not await post_one(second.port)
        status, body = await readyz(http, second.health_port)
        assert status == 200 and "degraded" not in body
        assert second.spool is not None and not second.spool.pending

        # Kafka goes away under a running ingress: no ack within publish_timeout.
        await asyncio.to_thread(kafka_later.stop)
        for _ in range(2):
            assert await post_one(second.port)
        await asyncio.to_thread(kafka_later.start)
        await post_until_direct(second.port)
        assert not second.crashed.is_set()
    spooled_count = sum(1 for *_, spooled in posted if spooled)
    assert sample("pushrelay_spool_drained_total") - drained >= spooled_count
    assert sample("pushrelay_spool_depth") == 0

    bus = KafkaBus(settings)
    records = await bus.read_topic(settings.push_topic)
    seen: list[str] = []
    for record in records:  # duplicates are allowed (at least once), gaps are not
        delivery = decode_push(record.value).delivery
        if delivery is not None and delivery not in seen:
            seen.append(delivery)
    assert {d for _, d, _ in posted} <= set(seen)
    for repo in REPOS:  # per-key order across spooled, restarted and direct pushes
        mine = [d for r, d, _ in posted if r == repo]
        assert [d for d in seen if d in set(mine)] == mine
    assert spooled_count >= 7
    assert any(not spooled for *_, spooled in posted)

    # Routed: the router turns the forwarded pushes into refresh requests.
    router = RouterService(settings)
    await router.start()
    try:
        wanted = {d for r, d, _ in posted if r == REPOS[0]}

        async def routed() -> bool:
            found = {decode_refresh(r.value).cause.delivery
                     for r in await bus.read_topic(settings.refresh_topic)}
            return wanted <= found
        await eventually(routed, within=60, interval=1.0)
    finally:
        await router.stop()

    # The delivery record: spooled, then accepted once forwarded.
    rows = {row.delivery: row for row in fold(await read_facts(bus, settings))}
    for _, delivery, spooled in posted:
        if spooled:
            assert rows[delivery].spooled_seconds is not None, rows[delivery]
            assert "(spooled " in rows[delivery].summary()


# ---- bad spool files and the spawned process ------------------------------------

async def test_corrupt_spool_is_a_clear_start_error(
        devstack_env: dict[str, str], topic_prefix: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    junk = b"someone else's file, not a spool\n" * 64
    (spool_dir / "spool.db").write_bytes(junk)
    settings = spool_settings(devstack_env, topic_prefix, spool_dir,
                              f"127.0.0.1:{procs.free_port()}")
    from ingress.service import create

    service = create(settings)
    with pytest.raises(BusCorrupt, match="spool.db"):
        await service.start()
    assert (spool_dir / "spool.db").read_bytes() == junk  # never emptied
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    with pytest.raises(BusError, match="a-file"):
        await create(spool_settings(devstack_env, topic_prefix, not_a_dir,
                                    f"127.0.0.1:{procs.free_port()}")).start()

    proc = spawn_ingress(devstack_env, topic_prefix, spool_dir, tmp_path / "corrupt.log").proc
    code = await asyncio.to_thread(proc.wait, 120)
    log = (tmp_path / "corrupt.log").read_text()
    assert code == 1, log
    assert "spool.db" in log and "Traceback" not in log
    assert (spool_dir / "spool.db").read_bytes() == junk


@dataclass
class Spawned:
    proc: subprocess.Popen[bytes]
    port: int
    health_port: int


def spawn_ingress(devstack_env: dict[str, str], topic_prefix: str, spool_dir: Path,
                  log: Path) -> Spawned:
    """``python -m pushrelay ingress`` with a spool and Kafka at a closed port."""
    port, health_port = procs.free_port(), procs.free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PUSHRELAY_") and k != "KUBECONFIG"}
    env.update(KUBECONFIG=devstack_env["KUBECONFIG"],
               PUSHRELAY_KAFKA_BOOTSTRAP=f"127.0.0.1:{procs.free_port()}",
               PUSHRELAY_TOPIC_PREFIX=topic_prefix, PUSHRELAY_SPOOL_DIR=str(spool_dir),
               PUSHRELAY_INGRESS_HOST="127.0.0.1", PUSHRELAY_HEALTH_HOST="127.0.0.1",
               PUSHRELAY_INGRESS_PORT=str(port), PUSHRELAY_HEALTH_PORT=str(health_port),
               PUSHRELAY_PUBLISH_TIMEOUT="2", PUSHRELAY_EVENT_QPS="100")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pushrelay", "ingress"], cwd=ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    return Spawned(proc, port, health_port)


async def test_spawned_ingress_spools_and_stops_cleanly(
        devstack_env: dict[str, str], topic_prefix: str, kube: ApiClient, namespace: str,
        http: ClientSession, tmp_path: Path) -> None:
    """What the fault suite builds on: ``pushrelay ingress`` with PUSHRELAY_SPOOL_DIR."""
    path = await project_with_receiver(kube, namespace)
    spool_dir = tmp_path / "spool"
    spawned = spawn_ingress(devstack_env, topic_prefix, spool_dir, tmp_path / "ingress.log")
    proc, port, health = spawned.proc, spawned.port, spawned.health_port
    try:
        async def ready() -> bool:
            try:
                return (await readyz(http, health))[0] == 200
            except OSError:
                return False
        await eventually(ready, within=60, interval=0.5)

        async def accepted() -> bool:  # the receiver table may still be loading
            status, _, headers = await post(http, port, path, push(REPOS[0]))
            return status == 202 and headers.get(SPOOLED_HEADER) == "true"
        await eventually(accepted, within=30, interval=0.5)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, (tmp_path / "ingress.log").read_text()[-3000:]
    store = LogStore(spool_dir, max_bytes=1 << 30, filename="spool.db")
    await store.open()
    try:  # accepted, and still there for the next start to forward
        assert store.end_offset(TOPIC, 0) >= 1
        assert not store.committed(GROUP, TP)
    finally:
        await store.close()
