"""Benchmark 3: API-server write amplification of a burst of pushes.

1,000 Quay pushes, as fast as 64 connections send them, spread evenly over 50
Warehouses (push k goes to the repository of Warehouse k mod 50, so each gets
20). Sent once to pushrelay (ingress, router and refresher as three processes,
default settings: 2 s coalescing window, 20 writes/s, burst 50) and once to
the Kargo-like baseline (bench/kargo_baseline.py), in the same run, against the
same Warehouses.

Writes are counted by the API server itself: the delta of
``apiserver_request_total`` by verb and resource over each run (this devstack
serves nobody else), cross-checked by a watch counting the changes of the
refresh annotation. pushrelay's count includes everything it wrote while the
burst was processed and after a graceful stop (Kubernetes Events included).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.cluster import Target, create_projects, create_warehouses, payload
from bench.common import (
    Context,
    Section,
    ServiceProc,
    api_counts,
    diff_counts,
    ratio,
    say,
    write_detail,
    writes,
)
from bench.kargo_baseline import KargoBaseline
from bench.load import Pool, RunResult, burst, now, post_request
from bench.watch import AnnotationWatch

NAMESPACE = "bench-amp"
CONCURRENCY = 64
QUIET = 4.0  # s without a new annotation value: the refresher is done


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    n = sizes.amp_warehouses
    path = (await create_projects(ctx.api, [NAMESPACE]))[NAMESPACE]
    targets = [Target(NAMESPACE, f"w{i}", f"amp-{i}", path) for i in range(n)]
    await create_warehouses(ctx.api, targets)
    requests = [post_request(path, payload(targets[k % n].repo)) for k in range(sizes.amp_pushes)]
    section.settings.update({
        "burst": f"{sizes.amp_pushes} pushes over {n} Warehouses "
                 f"({sizes.amp_pushes // n} each), {CONCURRENCY} connections",
        "pushrelay": "3 processes, default settings (PUSHRELAY_REFRESH_MIN_INTERVAL=2, "
                     "QPS=20, BURST=50)",
        "baseline": "Kargo-like receiver: per request, list the subscribed Warehouses "
                    "(from an informer cache, as Kargo's cached client) and patch each",
    })

    watch = AnnotationWatch(ctx.api, namespace=NAMESPACE)
    await watch.start()
    try:
        relay = await _pushrelay(ctx, section, requests, watch, n)
        base = await _baseline(ctx, requests, watch, path)
    finally:
        await watch.stop()

    per_wh = relay["patches"] / n
    base_per_wh = base["patches"] / n
    section.add("Warehouse PATCHes (API server)", relay["patches"], "", baseline=base["patches"],
                ratio=ratio(relay["patches"], base["patches"]))
    section.add("PATCHes per Warehouse", per_wh, "", baseline=base_per_wh,
                ratio=ratio(per_wh, base_per_wh), target="pushrelay <= 2", met=per_wh <= 2)
    section.add("annotation changes seen by a watch", relay["changes"], "",
                baseline=base["changes"], ratio=ratio(relay["changes"], base["changes"]))
    section.add("all API writes (any resource)", relay["writes"], "", baseline=base["writes"],
                ratio=ratio(relay["writes"], base["writes"]),
                note=relay["write_detail"])
    section.add("pushes answered 2xx", relay["ok"], "", baseline=base["ok"])
    section.add("burst sent in", relay["burst_s"], "s", baseline=base["burst_s"],
                ratio=ratio(relay["burst_s"], base["burst_s"]))
    section.add("burst start to last refresh", relay["settle_s"], "s",
                baseline=base["settle_s"], ratio=ratio(relay["settle_s"], base["settle_s"]))
    section.notes.append(
        "A Warehouse's pushes arrive over the whole burst; the refresher patches at the "
        "first (leading edge) and then at most once per 2 s window for all that arrived "
        "meanwhile (trailing edge), so the count per Warehouse is 1 + the number of 2 s "
        "windows the burst spans after its first push.")


async def _pushrelay(ctx: Context, section: Section, requests: list[bytes],
                     watch: AnnotationWatch, n: int) -> dict[str, Any]:
    logs = ctx.run_dir / "logs"
    env = ctx.service_env(ctx.prefix("amp"))
    procs = [ServiceProc(m, env, logs, label=f"amp-{m}") for m in ("ingress", "router",
                                                                  "refresher")]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        await asyncio.gather(*(p.wait_ready() for p in procs))
        await asyncio.sleep(1.0)  # let the consumers settle into their groups
        start_changes = watch.total
        before = await api_counts(ctx.stack)
        pool = Pool("127.0.0.1", procs[0].port, CONCURRENCY)
        started = now()
        try:
            result = await burst(pool, requests, CONCURRENCY)
        finally:
            pool.close()
        say(f"amplification: pushrelay burst of {len(requests)} sent in {result.seconds:.2f}s "
            f"({result.ok} accepted)")
        changed = lambda: all(watch.changes[(NAMESPACE, f"w{i}")] for i in range(n))  # noqa: E731
        if not await watch.quiet(QUIET, within=120, until=changed):
            section.notes.append("pushrelay: not every Warehouse was refreshed within 120 s")
        settle = watch.last_change - started
        middle = await api_counts(ctx.stack)
    finally:
        codes = [await p.stop() for p in procs]
    after = await api_counts(ctx.stack)
    if any(c != 0 for c in codes):
        section.notes.append(f"pushrelay exit codes: {codes}")
    patches = diff_counts(middle, before).get(("PATCH", "warehouses"), 0.0)
    delta = diff_counts(after, before)
    return {"patches": patches, "changes": watch.total - start_changes,
            "writes": writes(delta), "write_detail": write_detail(delta), "ok": result.ok,
            "burst_s": result.seconds, "settle_s": settle, "result": result}


async def _baseline(ctx: Context, requests: list[bytes], watch: AnnotationWatch,
                    path: str) -> dict[str, Any]:
    kargo = KargoBaseline(ctx.api, {path: NAMESPACE}, namespace=NAMESPACE)
    await kargo.start()
    try:
        start_changes = watch.total
        before = await api_counts(ctx.stack)
        pool = Pool("127.0.0.1", kargo.port, CONCURRENCY)
        started = now()
        try:
            result: RunResult = await burst(pool, requests, CONCURRENCY)
        finally:
            pool.close()
        await watch.quiet(1.0, within=60)
        settle = watch.last_change - started
        after = await api_counts(ctx.stack)
    finally:
        await kargo.stop()
    say(f"amplification: baseline burst sent in {result.seconds:.2f}s, {kargo.patches} patches")
    delta = diff_counts(after, before)
    return {"patches": delta.get(("PATCH", "warehouses"), 0.0),
            "changes": watch.total - start_changes, "writes": writes(delta),
            "ok": result.ok, "burst_s": result.seconds, "settle_s": settle}
