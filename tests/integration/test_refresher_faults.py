"""The refresher through faults, on the real devstack: kill -9, API outage, real 429s.

Disruptive tests never touch the shared stack's processes. The API-server
faults run against a *second* kube-apiserver on the same etcd
(:class:`ExtraApiserver`), which a test may stop, restart, or start with tiny
in-flight limits; the Warehouses are still watched through the shared one.
The crash test runs ``python -m refresher`` as a subprocess and SIGKILLs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.settings import Settings
from pushrelay_devstack.procs import free_port
from tests.integration.conftest import eventually, make_settings
from tests.integration.refresher_support import (
    ExtraApiserver,
    all_committed,
    create_warehouses,
    grant_refresher_rights,
    metric,
    produce,
    request,
    running_refresher,
    watching,
)

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


# ---- kill -9 mid-burst --------------------------------------------------------------


class RefresherProcess:
    """``python -m refresher`` with ``PUSHRELAY_*`` settings, its log in a file."""

    def __init__(self, settings: Settings, logfile: Path, **env: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(settings.kubeconfig),
            "PUSHRELAY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PUSHRELAY_TOPIC_PREFIX": settings.topic_prefix,
            "PUSHRELAY_TOPIC_PARTITIONS": str(settings.topic_partitions),
            "PUSHRELAY_REFRESHER_GROUP": settings.refresher_group,
            "PUSHRELAY_HEALTH_HOST": "127.0.0.1",
            "PUSHRELAY_HEALTH_PORT": str(self.port),
            "PUSHRELAY_LOG_FORMAT": "json",
            **env,
        }
        self.logfile = logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "refresher"], cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )

    async def ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.logfile.read_text()
        try:
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{self.port}/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    def kill(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[RefresherProcess]]:
    started: list[RefresherProcess] = []
    yield started
    for proc in started:
        proc.close()


async def test_kill_9_mid_burst_then_restart_refreshes_every_warehouse(
    kube: ApiClient, namespace: str, settings: Settings, tmp_path: Path,
    processes: list[RefresherProcess],
) -> None:
    names = [f"wh-{i:02d}" for i in range(50)]
    await create_warehouses(kube, namespace, names)
    slow = {"PUSHRELAY_REFRESH_QPS": "4", "PUSHRELAY_REFRESH_BURST": "4",
            "PUSHRELAY_REFRESH_MIN_INTERVAL": "2"}
    async with watching(kube, namespace) as watch:
        first = RefresherProcess(settings, tmp_path / "refresher-1.log", **slow)
        processes.append(first)
        first.start()
        await eventually(first.ready, within=60)
        sent = await produce(settings, [request(namespace, names[i % 50], f"d{i}")
                                        for i in range(1000)])
        await eventually(lambda: sum(watch.last_refresh(n) > sent[n] for n in names) >= 10,
                         within=60)
        assert first.kill(signal.SIGKILL) == -signal.SIGKILL
        done_before = sum(watch.last_refresh(n) > sent[n] for n in names)
        log.warning("killed with %d/50 warehouses refreshed", done_before)
        assert done_before < 50, "the kill must land mid-burst"
        # more pushes while nobody consumes
        sent |= await produce(settings, [request(namespace, n, f"late-{n}") for n in names[:10]])

        second = RefresherProcess(settings, tmp_path / "refresher-2.log",
                                  PUSHRELAY_REFRESH_QPS="50", PUSHRELAY_REFRESH_BURST="50")
        processes.append(second)
        t_restart = time.monotonic()
        second.start()
        await eventually(lambda: watch.refreshed_after(sent), within=120)
        log.warning("all 50 refreshed %.1fs after the restart; %d patches in total",
                    time.monotonic() - t_restart, watch.patches())
        await eventually(lambda: all_committed(settings), within=30)
        assert second.kill(signal.SIGTERM) == 0  # graceful stop exits 0


# ---- API server outage ----------------------------------------------------------------


@pytest.fixture
async def extra_apiserver(devstack_env: dict[str, str], tmp_path: Path,
                          request: pytest.FixtureRequest) -> AsyncIterator[ExtraApiserver]:
    from tests.devstack_fixtures import state_dir_of

    args = getattr(request, "param", ())
    server = ExtraApiserver(state_dir_of(devstack_env), tmp_path, args)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_api_server_down_20s_then_every_refresh_lands(
    kube: ApiClient, namespace: str, devstack_env: dict[str, str], topic_prefix: str,
    extra_apiserver: ExtraApiserver,
) -> None:
    settings = make_settings(devstack_env, topic_prefix,
                             kubeconfig=str(extra_apiserver.kubeconfig()),
                             refresh_max_backoff=2.0)
    names = [f"wh-{i:02d}" for i in range(20)]
    await create_warehouses(kube, namespace, names)
    retried = metric("pushrelay_refresher_retried_total", {"reason": "connection"})
    async with watching(kube, namespace) as watch, running_refresher(settings) as service:
        sent = await produce(settings, [request(namespace, n, f"before-{n}") for n in names])
        await eventually(lambda: watch.refreshed_after(sent), within=30)

        await asyncio.to_thread(extra_apiserver.stop)
        down_at = time.monotonic()
        sent = await produce(settings, [request(namespace, names[i % 20], f"during-{i}")
                                        for i in range(200)])
        await eventually(lambda: metric("pushrelay_refresher_retried_total",
                                        {"reason": "connection"}) > retried, within=20)
        # the outage itself: 20 s without an API server, not a synchronisation wait
        await asyncio.sleep(max(0.0, 20.0 - (time.monotonic() - down_at)))
        assert not any(watch.last_refresh(n) > sent[n] for n in names)
        assert not service.crashed.is_set()

        await asyncio.to_thread(extra_apiserver.start)
        back_at = time.monotonic()
        await eventually(lambda: watch.refreshed_after(sent), within=30)
        log.warning("after a 20 s outage all %d refreshed %.1fs after the API returned",
                    len(names), time.monotonic() - back_at)
        await eventually(lambda: all_committed(settings), within=15)
        assert not service.crashed.is_set()


# ---- real 429s --------------------------------------------------------------------------

# With priority and fairness off, --max-mutating-requests-inflight answers 429 with
# Retry-After: 1 once one write is in flight. system:masters is exempt from that
# limit, so the refresher runs as an ordinary user with least-privilege RBAC.
LIMITED = ("--enable-priority-and-fairness=false", "--max-mutating-requests-inflight=1")


@pytest.mark.parametrize("extra_apiserver", [LIMITED], indirect=True)
async def test_real_429s_are_retried_and_nothing_is_lost(
    kube: ApiClient, namespace: str, devstack_env: dict[str, str], topic_prefix: str,
    extra_apiserver: ExtraApiserver,
) -> None:
    from pushrelay_devstack.stack import mint_user_kubeconfig
    from tests.devstack_fixtures import state_dir_of

    user = f"refresher-{uuid.uuid4().hex[:6]}"
    mint_user_kubeconfig(state_dir_of(devstack_env), user)  # issues the client certificate
    await grant_refresher_rights(kube, namespace, user)
    settings = make_settings(devstack_env, topic_prefix,
                             kubeconfig=str(extra_apiserver.kubeconfig(user)),
                             refresh_qps=500, refresh_burst=500, refresh_max_backoff=2.0,
                             refresh_concurrency=64)
    names = [f"wh-{i:02d}" for i in range(50)]
    await create_warehouses(kube, namespace, names)
    before = metric("pushrelay_refresher_retried_total", {"reason": "429"})
    async with watching(kube, namespace) as watch, \
            running_refresher(settings) as service:
        sent = await produce(settings, [request(namespace, names[i % 50], f"d{i}")
                                        for i in range(500)])
        await eventually(lambda: watch.refreshed_after(sent), within=90)
        await eventually(lambda: service.marks.outstanding() == 0, within=30)
        await eventually(lambda: all_committed(settings), within=15)
        got_429 = metric("pushrelay_refresher_retried_total", {"reason": "429"}) - before
        log.warning("429s retried: %d; patches: %d", got_429, watch.patches())
        assert got_429 > 0, "the limited API server must have answered 429"
        assert watch.patches() <= 100
        assert not service.crashed.is_set()
