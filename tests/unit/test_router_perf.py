"""CPU cost of routing with 10,000 Warehouses indexed (no broker, no API server).

This is the ceiling of one router process: decode + route + build and encode
the requests. The end-to-end number with Kafka is measured by
tests/integration/test_router_throughput.py; both are in docs/router.md.
"""

from __future__ import annotations

import time
from typing import Any, cast

from pushrelay.core.events import PushEvent, Scope, encode
from pushrelay.infra.settings import RouterSettings
from router.index import LiveIndex
from router.routing import route_batch
from router.service import RouterService
from tests.unit.test_router_service import record

WAREHOUSES = 10_000
REPOS = 1000


def build() -> RouterService:
    svc = RouterService(RouterSettings())
    svc.live = LiveIndex(cast(Any, None))
    for j in range(WAREHOUSES):
        svc.live._on_change("ADDED", {
            "metadata": {"namespace": f"ns{j // 100}", "name": f"w{j}", "uid": str(j),
                         "generation": 1},
            "spec": {"subscriptions": [
                {"image": {"repoURL": f"quay.io/bench/repo{j % REPOS}", "constraint": "^1.0.0"}},
                {"git": {"repoURL": f"https://git.example.com/{j}.git"}}]}})
    return svc


def test_route_10k_warehouses() -> None:
    started = time.perf_counter()
    svc = build()
    built = time.perf_counter() - started
    assert svc.live is not None and len(svc.live.index) == WAREHOUSES
    raw = []
    for i in range(5000):
        j = (i * 7919) % WAREHOUSES
        raw.append(encode(PushEvent(repository=f"quay.io/bench/repo{j % REPOS}",
                                    repo_urls=[f"quay.io/bench/repo{j % REPOS}"],
                                    tags=["v1.2.3"], scope=Scope(project=f"ns{j // 100}"))))
    records = [record(v, i) for i, v in enumerate(raw)]
    started = time.perf_counter()
    out, _ = route_batch(svc.live.index, records)
    elapsed = time.perf_counter() - started
    assert len(out) == len(raw)  # one Warehouse per project-scoped push
    rate = len(raw) / elapsed
    print(f"\nindex of {WAREHOUSES} built in {built:.2f}s; routing {rate:,.0f} events/s")
    assert rate > 1000
