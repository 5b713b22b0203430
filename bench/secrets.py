"""Benchmark 6: ingress start with thousands of Secrets that are none of its business.

Real clusters hold thousands of Secrets unrelated to webhooks (Helm keeps every
release revision as one, up to ~1 MB). The ingress reads only the data of the
Secrets its receivers reference (docs/ingress.md), so its start must not depend
on the others.

Same run, same devstack: a few projects with a receiver each ("empty cluster"),
one warm-up start (it creates the topics), then ``python -m ingress`` started
``secrets_runs`` times: seconds from start to
``/readyz`` = 200 (polled every 20 ms) and RSS 2 s later. Then
``secrets_unrelated`` Helm-release-like Secrets (type ``helm.sh/release.v1``,
``secrets_bytes`` of data, no ``secret`` key) in ``secrets_namespaces``
namespaces, and the same starts again. Targets (issue 17): ready within 1.2x and
RSS within 10 MiB of the empty-cluster figures (medians).

Proof from the API server's side: its ``apiserver_response_sizes`` for Secret
LISTs over each start, and the bytes its sockets sent to the ingress process
(kernel TCP counters, :func:`pushrelay_devstack.audit.bytes_sent_to`: the watch
streams included), must stay far below the unrelated Secrets' data (a full read
would be at least ``secrets_unrelated x secrets_bytes``). The noise namespaces
are deleted at the end.
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
from dataclasses import dataclass

from kubernetes_asyncio.client import ApiClient

from bench.cluster import create_object, create_projects, gather_bounded
from bench.common import Context, Section, ServiceProc, ratio, say
from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.resources import SECRET
from pushrelay_devstack.audit import bytes_sent_to

HELM_TYPE = "helm.sh/release.v1"
PROJECTS = 5
READY_RATIO = 1.2
RSS_SLACK_MIB = 10.0
SETTLE_SECONDS = 2.0


def noise_namespaces(count: int, prefix: str = "noise") -> list[str]:
    return [f"{prefix}-{i:02d}" for i in range(count)]


async def create_unrelated_secrets(api: ApiClient, namespaces: list[str], total: int,
                                   data_bytes: int, concurrency: int = 16) -> int:
    """``total`` Helm-release-like Secrets spread over ``namespaces`` (created if
    missing), concurrently; returns the bytes of data written. Idempotent."""
    await gather_bounded((create_object(api, "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for ns in namespaces), concurrency)
    # Random bytes do not compress: etcd and the wire carry every one of them.
    release = base64.b64encode(os.urandom(data_bytes)).decode()

    def body(i: int) -> dict[str, object]:
        return {"apiVersion": "v1", "kind": "Secret", "type": HELM_TYPE,
                "metadata": {"name": f"sh.helm.release.v1.app{i}.v1",
                             "labels": {"owner": "helm", "name": f"app{i}", "version": "1"}},
                "data": {"release": release}}

    await gather_bounded((create_object(api, SECRET.path(namespaces[i % len(namespaces)]), body(i))
                          for i in range(total)), concurrency)
    return total * data_bytes


async def delete_namespaces(api: ApiClient, namespaces: list[str]) -> None:
    async def one(ns: str) -> None:
        try:
            await request_json(api, "DELETE", f"/api/v1/namespaces/{ns}")
        except KubeError as exc:
            if exc.status != 404:
                raise
    await asyncio.gather(*(one(ns) for ns in namespaces))


# ---- the API server's side ---------------------------------------------------------

def _sum(text: str, metric: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def listed_secret_bytes(ctx: Context) -> float:
    """Bytes of Secret LIST responses so far (sync; run in a thread), from the API
    server's own /metrics (measured after the metadata-only conversion)."""
    status, body = ctx.stack.admin_client().request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"apiserver /metrics answered {status}")
    return _sum(body.decode(), "apiserver_response_sizes_sum", resource="secrets", verb="LIST")


def apiserver_pid(ctx: Context) -> int:
    [pid] = [s.pid for s in ctx.stack.status() if s.name == "kube-apiserver" and s.pid]
    return pid


# ---- the measurement ---------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    ready: float  # s
    rss: float  # MiB, SETTLE_SECONDS after ready
    listed: float  # bytes of Secret LIST responses (every client) during the start
    sent: int  # bytes the API server sent the ingress (open connections), by then


async def start_once(ctx: Context, label: str) -> Start:
    env = ctx.service_env(ctx.prefix("secrets"), log_level="WARNING")
    proc = ServiceProc("ingress", env, ctx.run_dir / "logs", label=label)
    before = await asyncio.to_thread(listed_secret_bytes, ctx)
    await proc.start()
    try:
        ready = await proc.wait_ready(interval=0.02)
        await asyncio.sleep(SETTLE_SECONDS)
        rss = proc.rss()[0] / 1024
        sent = await asyncio.to_thread(bytes_sent_to, apiserver_pid(ctx), proc.pid)
    finally:
        await proc.stop()
    listed = await asyncio.to_thread(listed_secret_bytes, ctx) - before
    return Start(ready, rss, listed, sent)


async def starts(ctx: Context, label: str, runs: int) -> list[Start]:
    results = []
    for i in range(runs):
        result = await start_once(ctx, f"secrets-{label}-{i}")
        say(f"{label} #{i}: ready {result.ready:.2f}s, RSS {result.rss:.0f} MiB, API server "
            f"sent {result.listed / 1e6:.2f} MB of Secret LISTs, "
            f"{result.sent / 1e6:.2f} MB to the ingress in all")
        results.append(result)
    return results


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    projects = [f"bench-secrets-p{i}" for i in range(PROJECTS)]
    await create_projects(ctx.api, projects)
    await start_once(ctx, "secrets-warmup")  # creates the topics: not a start to compare
    empty = await starts(ctx, "empty", sizes.secrets_runs)
    namespaces = noise_namespaces(sizes.secrets_namespaces, f"bench-noise-{ctx.run_id}")
    say(f"creating {sizes.secrets_unrelated:,} unrelated Secrets of "
        f"{sizes.secrets_bytes / 1000:.0f} KB in {len(namespaces)} namespaces")
    try:
        noise = await create_unrelated_secrets(ctx.api, namespaces, sizes.secrets_unrelated,
                                               sizes.secrets_bytes)
        noisy = await starts(ctx, "noisy", sizes.secrets_runs)
    finally:
        await delete_namespaces(ctx.api, namespaces)
    section.settings.update({
        "unrelated Secrets": sizes.secrets_unrelated,
        "data per Secret (bytes)": sizes.secrets_bytes,
        "namespaces": len(namespaces), "projects (receivers)": PROJECTS,
        "starts per case": sizes.secrets_runs})

    median = statistics.median
    ready_empty, ready_noisy = median(s.ready for s in empty), median(s.ready for s in noisy)
    rss_empty, rss_noisy = median(s.rss for s in empty), median(s.rss for s in noisy)
    ready_ratio = ratio(ready_noisy, ready_empty)
    section.add("ready after start, with the unrelated Secrets", ready_noisy, "s",
                baseline=ready_empty, ratio=ready_ratio, target=f"<= {READY_RATIO}x",
                met=ready_ratio <= READY_RATIO)
    section.add("RSS 2 s after ready, with the unrelated Secrets", rss_noisy, "MiB",
                baseline=rss_empty, ratio=ratio(rss_noisy, rss_empty),
                target=f"<= baseline + {RSS_SLACK_MIB:g} MiB",
                met=rss_noisy <= rss_empty + RSS_SLACK_MIB)
    listed = max(s.listed for s in noisy)
    sent = max(s.sent for s in noisy)
    section.add("API server: Secret LIST bytes per start (most)", listed / 1e6, "MB",
                baseline=noise / 1e6, ratio=ratio(listed, noise),
                target="<= 2% of the unrelated data", met=listed <= 0.02 * noise,
                note="baseline: the unrelated Secrets' data")
    section.add("API server: bytes sent to the ingress per start (most)", sent / 1e6, "MB",
                baseline=max(s.sent for s in empty) / 1e6,
                target="<= 2% of the unrelated data", met=sent <= 0.02 * noise,
                note="kernel TCP counters of the API server's sockets; baseline: empty cluster")
    section.notes.append(
        "Baseline = the same ingress, same run, before the unrelated Secrets existed "
        f"(medians of {sizes.secrets_runs} starts each). LIST bytes: the API server's "
        "apiserver_response_sizes; bytes sent: its sockets' TCP counters (watches included).")
