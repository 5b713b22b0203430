"""Benchmark 5: RSS of each service with 10,000 Warehouses, idle and under a soak.

ingress, router and refresher run as three processes against the bench
devstack's 10,000 Warehouses in 110 projects (bench/layout.py): the router
indexes every Warehouse, the ingress serves every project's receiver. Then a
soak: ``soak_rate`` pushes/s (open loop) for ``soak_seconds`` (``--soak``),
round-robin over all 10,000 Warehouses through their projects' receivers, so
every push becomes a refresh.

RSS (``VmRSS``) is sampled every second: *start* when all three are ready,
*peak* the highest sample during the soak, *end* after it. Growth = end /
start − 1. The lifetime peak (``VmHWM``, which includes start-up, e.g. the
LIST of 10,000 Warehouses) is given too.

Baseline, same run: for each service, a process that imports it and idles
(bench/idle.py) — the interpreter-plus-libraries floor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.cluster import payload
from bench.common import (
    Context,
    Section,
    ServiceProc,
    api_counts,
    busy_share,
    diff_counts,
    machine_busy,
    ratio,
    say,
    stop_all,
    write_detail,
    writes,
)
from bench.layout import ensure_index
from bench.load import Pool, fixed_rate, post_request
from bench.watch import AnnotationWatch

SERVICES = ("ingress", "router", "refresher")
QPS = 1000  # as in the e2e benchmark: the budget must not bind at 100 pushes/s
BURST = 1000
LIMIT_MIB = 150.0
GROWTH = 0.10


async def _floor(ctx: Context) -> dict[str, float]:
    """RSS (MiB) of a process that imports each service and idles."""
    logs = ctx.run_dir / "logs"
    procs = {name: ServiceProc("bench.idle", ctx.service_env(ctx.prefix("idle")), logs,
                               label=f"idle-{name}", args=[name]) for name in SERVICES}
    try:
        await asyncio.gather(*(p.start() for p in procs.values()))
        await asyncio.gather(*(p.wait_ready() for p in procs.values()))
        await asyncio.sleep(1.0)
        return {name: p.rss()[0] / 1024 for name, p in procs.items()}
    finally:
        await stop_all(procs.values())


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    targets = await ensure_index(ctx)
    bodies = [post_request(t.path, payload(t.repo)) for t in targets]
    floor = await _floor(ctx)
    logs = ctx.run_dir / "logs"
    env = ctx.service_env(ctx.prefix("soak"), refresh_qps=QPS, refresh_burst=BURST)
    procs = {name: ServiceProc(name, env, logs, label=f"soak-{name}") for name in SERVICES}
    section.settings.update({
        "index": f"{len(targets)} Warehouses, {len({t.namespace for t in targets})} projects",
        "soak": f"{sizes.soak_rate:g} pushes/s for {sizes.soak_seconds:g} s, round-robin over "
                "every Warehouse (each push a refresh)",
        "pushrelay": f"3 processes; PUSHRELAY_REFRESH_QPS={QPS}, REFRESH_BURST={BURST}, "
                     "other settings default",
        "baseline": "bench.idle: the service imported, nothing running (interpreter + "
                    "libraries)",
    })
    samples: dict[str, list[int]] = {name: [] for name in SERVICES}
    watch = AnnotationWatch(ctx.api, prefix="bench-")
    try:
        await asyncio.gather(*(p.start() for p in procs.values()))
        await asyncio.gather(*(p.wait_ready(within=300) for p in procs.values()))
        await asyncio.sleep(3.0)
        start = {name: p.rss()[0] for name, p in procs.items()}
        say("memory: ready; RSS MiB " + ", ".join(
            f"{n} {v / 1024:.0f}" for n, v in start.items()))
        await watch.start(within=300)
        before_changes = watch.total
        before = await api_counts(ctx.stack)
        busy_before = machine_busy()

        async def sample() -> None:
            while True:
                for name, p in procs.items():
                    samples[name].append(p.rss()[0])
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        pool = Pool("127.0.0.1", procs["ingress"].port, 128)
        try:
            result = await fixed_rate(pool, lambda i: bodies[i % len(bodies)], sizes.soak_rate,
                                      sizes.soak_seconds)
        finally:
            pool.close()
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        busy = busy_share(busy_before, machine_busy())
        await watch.quiet(3.0, within=30)
        end = {name: p.rss()[0] for name, p in procs.items()}
        hwm = {name: p.rss()[1] for name, p in procs.items()}
        refreshed = watch.total - before_changes
        metrics: dict[str, Any] = await procs["refresher"].metrics()
    finally:
        await watch.stop()
        codes = {name: await p.stop() for name, p in procs.items()}
    delta = diff_counts(await api_counts(ctx.stack), before)
    if any(c != 0 for c in codes.values()):
        section.notes.append(f"exit codes after SIGTERM: {codes} (see the run's logs)")

    for name in SERVICES:
        series = samples[name] or [start[name]]
        s_mib, e_mib = start[name] / 1024, end[name] / 1024
        peak = max(max(series), end[name]) / 1024
        growth = e_mib / s_mib - 1 if s_mib else float("nan")
        section.add(f"{name}: RSS start / peak / end", peak, "MiB peak", baseline=floor[name],
                    ratio=ratio(peak, floor[name]), target=f"< {LIMIT_MIB:g} MiB",
                    met=peak < LIMIT_MIB,
                    note=f"start {s_mib:.1f}, end {e_mib:.1f}, lifetime peak "
                         f"{hwm[name] / 1024:.1f}")
        section.add(f"{name}: growth start → end", growth * 100, "%",
                    target=f"< {GROWTH * 100:g} %", met=growth < GROWTH,
                    note=_trend(series))
        half = series[len(series) // 2] if len(series) > 1 else series[0]
        section.add(f"{name}: growth over the second half", (end[name] / half - 1) * 100, "%",
                    note="a leak keeps growing; a bounded cache has levelled off")
    section.add("pushes accepted during the soak", result.ok, "",
                note=f"of {result.sent}; p99 {result.p(99) * 1000:.1f} ms")
    section.add("API writes per accepted push (any resource)", ratio(writes(delta), result.ok),
                "", note=write_detail(delta))
    section.add("machine CPU busy during the soak (all cores)", busy * 100, "%")
    section.add("refreshes seen by a watch", refreshed, "",
                note=f"patches counted by the refresher: "
                     f"{metrics.get('pushrelay_refresher_patched_total', 0):.0f}")


def _trend(series: list[int]) -> str:
    """RSS at each quarter of the soak, MiB."""
    if len(series) < 4:
        return ""
    quarters = [series[min(len(series) - 1, len(series) * q // 4)] / 1024 for q in range(1, 5)]
    return "quarters: " + " / ".join(f"{q:.1f}" for q in quarters)
