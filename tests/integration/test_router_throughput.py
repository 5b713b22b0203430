"""Throughput of one router process with 10,000 Warehouses indexed, and its RSS.

Opt-in (it creates 10,000 Warehouses): ``PUSHRELAY_ROUTER_BENCH=1``. The
router runs as its own process (``python -m router``) so its RSS is its own.
Events are produced *before* the router starts; the rate is measured from the
first refresh request seen to the last one, so the initial LIST of the
Warehouses is not counted (it is reported separately as the time to ready).

Layout: 100 namespaces × 100 Warehouses; Warehouse j subscribes to
``quay.io/bench/repo{j % 1000}`` with constraint ``^1.0.0`` (plus a Git
subscription, as real Warehouses have). A project-scoped push therefore
matches exactly one Warehouse; a cluster-scoped push matches ten.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.events import encode
from pushrelay.infra.bus.kafka import KafkaBus, new_producer
from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.resources import WAREHOUSE
from pushrelay.infra.settings import Settings
from tests.integration.conftest import eventually
from tests.integration.test_router_flow import Collector, push_event, warehouse

pytestmark = pytest.mark.skipif(
    not os.environ.get("PUSHRELAY_ROUTER_BENCH"),
    reason="benchmark: set PUSHRELAY_ROUTER_BENCH=1 (creates 10,000 Warehouses)")

NAMESPACES = 100
PER_NAMESPACE = 100
REPOS = 1000
PROJECT_EVENTS = 20_000
CLUSTER_EVENTS = 2_000
RESULTS = Path(os.environ.get("PUSHRELAY_ROUTER_BENCH_OUT", "/tmp/pushrelay-router-bench.json"))


def bench_warehouse(j: int) -> dict[str, object]:
    return warehouse(f"w{j}", {"image": {"repoURL": f"quay.io/bench/repo{j % REPOS}",
                                         "constraint": "^1.0.0"}},
                     {"git": {"repoURL": f"https://git.example.com/bench/{j}.git"}})


@pytest.fixture
async def bench_namespaces(kube: ApiClient, topic_prefix: str) -> AsyncIterator[list[str]]:
    names = [f"b{topic_prefix[1:7]}-{i}" for i in range(NAMESPACES)]
    sem = asyncio.Semaphore(48)

    async def call(method: str, path: str, body: object = None) -> None:
        async with sem:
            await request_json(kube, method, path, body=body, request_timeout=60)

    await asyncio.gather(*(call("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}) for n in names))
    try:
        await asyncio.gather(*(
            call("POST", WAREHOUSE.path(names[j // PER_NAMESPACE]), bench_warehouse(j))
            for j in range(NAMESPACES * PER_NAMESPACE)))
        yield names
    finally:
        for n in names:  # deletecollection: other tests LIST every namespace
            try:
                await call("DELETE", WAREHOUSE.path(n))
                await call("DELETE", f"/api/v1/namespaces/{n}")
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def test_router_throughput_10k(settings: Settings, bench_namespaces: list[str]) -> None:
    await KafkaBus(settings).ensure_topics()
    producer = new_producer(settings, linger_ms=20)
    await producer.start()
    events = []
    for i in range(PROJECT_EVENTS):
        j = (i * 7919) % (NAMESPACES * PER_NAMESPACE)
        events.append(push_event(["v1.2.3"], bench_namespaces[j // PER_NAMESPACE],
                                 f"quay.io/bench/repo{j % REPOS}"))
    for i in range(CLUSTER_EVENTS):
        events.append(push_event(["v1.2.3"], None, f"quay.io/bench/repo{i % REPOS}"))
    futures = [await producer.send(settings.push_topic, encode(e), key=e.key) for e in events]
    await asyncio.gather(*futures)
    await producer.stop()
    expected = PROJECT_EVENTS + CLUSTER_EVENTS * NAMESPACES * PER_NAMESPACE // REPOS

    collector = Collector(settings, settings.refresh_topic)
    await collector.start()
    env = {**os.environ, "PUSHRELAY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "PUSHRELAY_TOPIC_PREFIX": settings.topic_prefix,
           "PUSHRELAY_ROUTER_GROUP": settings.router_group,
           "KUBECONFIG": settings.kubeconfig or "", "PUSHRELAY_LOG_LEVEL": "WARNING",
           "PUSHRELAY_HEALTH_PORT": "0", "PUSHRELAY_TOPIC_PARTITIONS": "3"}
    started = time.monotonic()
    profile = os.environ.get("PUSHRELAY_ROUTER_BENCH_PROFILE")  # a cProfile output path
    wrap = ["-m", "cProfile", "-o", profile] if profile else []
    proc = await asyncio.create_subprocess_exec(sys.executable, *wrap, "-m", "router", env=env)
    try:
        await eventually(lambda: collector.raw, within=120, interval=0.01)
        first = time.monotonic()
        peak = rss_kib(proc.pid)

        def done() -> bool:
            peak.update({k: max(v, peak.get(k, 0)) for k, v in rss_kib(proc.pid).items()})
            return len(collector.raw) >= expected
        await eventually(done, within=300, interval=0.05)
        last = time.monotonic()
    finally:
        proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 30)
        await collector.stop()
    events_per_s = len(events) / (last - first)
    result = {
        "warehouses": NAMESPACES * PER_NAMESPACE, "events": len(events),
        "requests": len(collector.raw), "seconds": round(last - first, 2),
        "events_per_second": round(events_per_s),
        "requests_per_second": round(len(collector.raw) / (last - first)),
        "time_to_first_request_s": round(first - started, 2),
        "rss_mib": round(peak["VmRSS"] / 1024, 1), "peak_rss_mib": round(peak["VmHWM"] / 1024, 1),
        "exit_code": code,
    }
    await asyncio.to_thread(RESULTS.write_bytes, orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print("\n" + orjson.dumps(result).decode())
    assert code == 0  # SIGTERM: graceful
    assert len(collector.raw) == expected
