"""Benchmark 7: the embedded bus against Kafka, and what the ingress spool costs.

(a) ``pushrelay all-in-one`` once on each bus, as two processes with the same
settings: ``PUSHRELAY_BUS=kafka`` on the bench devstack's broker (the baseline),
``PUSHRELAY_BUS=embedded`` on a data directory in the run directory (no Kafka).

* acknowledged req/s: wrk saturation (bench 1's rounds, alternating between the
  two) on a receiver whose repository no Warehouse subscribes to: every push is
  made durable and routed, nothing is patched;
* push → annotation p50 / p99 at the e2e benchmark's rate (200/s) over its
  1,000 Warehouses (bench/e2e.py's round-robin and tracker: latency from the 202
  to the watch seeing the refresh), and at ``bus_light_rate`` (50/s), which one
  process sustains on a small machine (at 200/s it may not: then the figure is
  mostly queueing), one measured run each per bus;
* RSS of the process after that run (``VmRSS``; ``VmHWM`` the lifetime peak), and
  the broker's, which the embedded install does not run.

Ratios: embedded / Kafka.

(b) the spool: one ``python -m ingress`` with ``PUSHRELAY_SPOOL_DIR`` at
``spool_rate`` (200/s: below the saturation of either path, so the figure is
the cost of a write, not a queue; at bench 1's 1,000/s the Kafka path saturates
first on a small machine), open loop (bench/load.py), with the broker up, then
with the broker stopped — every event then waits for its spool fsync instead of
Kafka's ack — then the broker is started again. Latency from each request's due
time. Ratio: spooling / Kafka up. One round each (a broker restart is ~20 s).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.cluster import create_projects, payload
from bench.common import (
    Context,
    Section,
    ServiceProc,
    percentile,
    ratio,
    rss_kib,
    say,
    stop_all,
)
from bench.e2e import BURST, CONCURRENCY, QPS, WARMUP_SECONDS, RoundRobin, Tracker, drained
from bench.ingress import INSTALL_HINT, combine, probe, run_wrk, wrk_path
from bench.layout import E2E_PREFIX, ensure_e2e
from bench.load import Pool, RunResult, fixed_rate, post_request
from bench.watch import AnnotationWatch

NAMESPACE = "bench-bus"
BUSES = ("kafka", "embedded")
#: While spooling, a publish waits this long for Kafka before it spools (once the
#: producer knows the broker is gone it spools at once); short, so the warm-up is.
PUBLISH_TIMEOUT = 1.0
#: The spool is in use once this many answers in a row came in under FAST_S.
FAST_IN_A_ROW = 20
FAST_S = 0.05


def _all_in_one(ctx: Context, bus: str) -> ServiceProc:
    settings: dict[str, Any] = {"refresh_qps": QPS, "refresh_burst": BURST,
                                "refresh_concurrency": CONCURRENCY, "bus": bus}
    if bus == "embedded":
        data = ctx.run_dir / f"embedded-{ctx.run_id}"
        data.mkdir(parents=True, exist_ok=True)
        settings["data_dir"] = str(data)
    env = ctx.service_env(ctx.prefix(f"bus-{bus}"), **settings)
    return ServiceProc("pushrelay", env, ctx.run_dir / "logs", label=f"bus-{bus}",
                       args=["all-in-one"], public=True)


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    if wrk_path() is None:
        raise RuntimeError(INSTALL_HINT)
    paths = await create_projects(ctx.api, [NAMESPACE])
    path, body = paths[NAMESPACE], payload("bus-unsubscribed")
    targets = await ensure_e2e(ctx)
    section.settings.update({
        "processes": "`pushrelay all-in-one` per bus, PUSHRELAY_BUS=kafka (bench devstack "
                     "broker) and =embedded (data dir in the run directory, no Kafka); "
                     f"PUSHRELAY_REFRESH_QPS={QPS}, BURST={BURST}, CONCURRENCY={CONCURRENCY}",
        "throughput": f"wrk -t1 -c{sizes.wrk_connections}, {sizes.wrk_rounds} alternating "
                      f"rounds of {sizes.wrk_round_seconds:g} s, a repository no Warehouse "
                      "subscribes to",
        "latency": f"bench 2's layout and round-robin, {sizes.e2e_rate:g} pushes/s (bench 2's "
                   f"rate) and {sizes.bus_light_rate:g}/s, {sizes.e2e_seconds:g} s each per bus "
                   f"(after {WARMUP_SECONDS:g} s warm-up)",
        "spool": f"one ingress, PUSHRELAY_SPOOL_DIR, PUBLISH_TIMEOUT={PUBLISH_TIMEOUT:g}; "
                 f"{sizes.spool_rate:g} req/s for {sizes.spool_seconds:g} s broker up, then "
                 "the same with the broker stopped",
    })
    await _buses(ctx, section, path, body, targets)
    await _spool(ctx, section, path, body)


async def _buses(ctx: Context, section: Section, path: str, body: bytes,
                 targets: list[Any]) -> None:
    sizes = ctx.sizes
    procs = {bus: _all_in_one(ctx, bus) for bus in BUSES}
    watch = AnnotationWatch(ctx.api, prefix=E2E_PREFIX)
    rounds: dict[str, list[dict[str, Any]]] = {bus: [] for bus in BUSES}
    rates = (sizes.e2e_rate, sizes.bus_light_rate)
    latency: dict[tuple[str, float], Tracker] = {}
    achieved: dict[tuple[str, float], float] = {}
    rss: dict[str, tuple[int, int]] = {}
    try:
        await asyncio.gather(*(p.start() for p in procs.values()))
        await asyncio.gather(*(p.wait_ready() for p in procs.values()))
        for proc in procs.values():
            await probe(proc.port, path, body)
            await run_wrk(f"{proc.base}{path}", 1, sizes.wrk_connections, body)  # warm-up
        for r in range(sizes.wrk_rounds):
            for bus in BUSES if r % 2 == 0 else tuple(reversed(BUSES)):
                result = await run_wrk(f"{procs[bus].base}{path}", sizes.wrk_round_seconds,
                                       sizes.wrk_connections, body)
                rounds[bus].append(result)
                say(f"bus bench: wrk round {r + 1} {bus}: "
                    f"{result['requests'] / (result['duration_us'] / 1e6):,.0f} req/s")
        await watch.start()
        robin = RoundRobin(targets, sizes.e2e_rate)
        for bus in BUSES:
            for rate in rates:
                robin.rate = rate
                tracker = await _latency(robin, procs[bus].port, sizes.e2e_seconds, watch)
                latency[bus, rate] = tracker
                achieved[bus, rate] = tracker.accepted / sizes.e2e_seconds
                if tracker.outstanding:
                    section.notes.append(f"{bus} at {rate:g}/s: {tracker.outstanding} accepted "
                                         "pushes saw no refresh within 30 s")
                say(f"bus bench: {bus} at {rate:g}/s: p99 {_p(tracker, 99):.0f} ms")
            rss[bus] = procs[bus].rss()
    finally:
        await watch.stop()
        await stop_all(procs.values())
    sat = {bus: combine(rs) for bus, rs in rounds.items()}
    e, k = sat["embedded"], sat["kafka"]
    section.add("acknowledged req/s (saturated)", e["rps"], "req/s", baseline=k["rps"],
                ratio=ratio(e["rps"], k["rps"]),
                note=f"errors / non-2xx: {e['errors']:.0f} / {k['errors']:.0f}")
    section.add("p99 under saturation", e["p99_ms"], "ms", baseline=k["p99_ms"],
                ratio=ratio(e["p99_ms"], k["p99_ms"]))
    for rate in rates:
        for q in (50, 99):
            pe, pk = _p(latency["embedded", rate], q), _p(latency["kafka", rate], q)
            section.add(f"push→annotation p{q} at {rate:g}/s", pe, "ms", baseline=pk,
                        ratio=ratio(pe, pk))
        ae, ak = achieved["embedded", rate], achieved["kafka", rate]
        section.add(f"accepted pushes/s at {rate:g}/s offered", ae, "/s", baseline=ak,
                    ratio=ratio(ae, ak),
                    note="one process saturated: the latency is mostly queueing"
                    if min(ae, ak) < rate * 0.95 else "")
    section.add("accepted pushes with no refresh seen",
                sum(t.outstanding for (bus, _), t in latency.items() if bus == "embedded"), "",
                baseline=sum(t.outstanding for (bus, _), t in latency.items() if bus == "kafka"))
    section.add("RSS of all-in-one after the latency runs", rss["embedded"][0] / 1024, "MiB",
                baseline=rss["kafka"][0] / 1024, ratio=ratio(rss["embedded"][0], rss["kafka"][0]),
                note=f"VmHWM {rss['embedded'][1] / 1024:.0f} / {rss['kafka'][1] / 1024:.0f} MiB")
    broker = next((s for s in ctx.stack.status() if s.name == "kafka" and s.pid), None)
    if broker is not None and broker.pid is not None:
        section.add("RSS of the Kafka broker (not run with embedded)",
                    rss_kib(broker.pid)[0] / 1024, "MiB")


async def _latency(robin: RoundRobin, port: int, seconds: float,
                   watch: AnnotationWatch) -> Tracker:
    """One measured e2e run (after a warm-up and a quiet watch), drained."""
    await robin.run(port, WARMUP_SECONDS, None)
    await watch.quiet(2.5, within=30)
    tracker = Tracker(watch)
    try:
        await robin.run(port, seconds, tracker)
        await drained(tracker, 30.0)
    finally:
        tracker.close()
    return tracker


def _p(tracker: Tracker, q: float) -> float:
    """A latency percentile from the 202, ms."""
    return percentile(tracker.from_answer, q) * 1000


async def _fixed(port: int, raw: bytes, rate: float, seconds: float) -> RunResult:
    pool = Pool("127.0.0.1", port, 256)
    try:
        return await fixed_rate(pool, lambda _: raw, rate, seconds)
    finally:
        pool.close()


async def _spooling(port: int, raw: bytes, within: float = 120.0) -> float:
    """Wait until the ingress answers from its spool (fast 202s with the broker down);
    seconds it took."""
    started = time.monotonic()
    pool = Pool("127.0.0.1", port, 1)
    fast = 0
    try:
        while fast < FAST_IN_A_ROW:
            if time.monotonic() - started > within:
                raise RuntimeError("the ingress never answered from its spool")
            sent = time.monotonic()
            status = await pool.request(raw)
            fast = fast + 1 if status == 202 and time.monotonic() - sent < FAST_S else 0
    finally:
        pool.close()
    return time.monotonic() - started


async def _spool(ctx: Context, section: Section, path: str, body: bytes) -> None:
    sizes = ctx.sizes
    spool = ctx.run_dir / f"spool-{ctx.run_id}"
    spool.mkdir(parents=True, exist_ok=True)
    env = ctx.service_env(ctx.prefix("spool"), spool_dir=str(spool),
                          publish_timeout=PUBLISH_TIMEOUT)
    ingress = ServiceProc("ingress", env, ctx.run_dir / "logs", label="spool-ingress")
    raw = post_request(path, body)
    stopped = False
    try:
        await ingress.start()
        await ingress.wait_ready()
        await probe(ingress.port, path, body)
        await _fixed(ingress.port, raw, sizes.spool_rate, 1.0)  # warm-up
        up = await _fixed(ingress.port, raw, sizes.spool_rate, sizes.spool_seconds)
        say(f"bus bench: spool ingress, broker up: p99 {up.p(99) * 1000:.1f} ms")
        stopped = await asyncio.to_thread(ctx.stack.stop_kafka)
        took = await _spooling(ingress.port, raw)
        down = await _fixed(ingress.port, raw, sizes.spool_rate, sizes.spool_seconds)
        say(f"bus bench: spool ingress, broker down: p99 {down.p(99) * 1000:.1f} ms "
            f"(spooling after {took:.1f} s)")
        metrics = await ingress.metrics()
    finally:
        if stopped:
            await asyncio.to_thread(ctx.stack.start_kafka)
        await ingress.stop()
    for q in (50, 99):
        section.add(f"spool: ingress p{q} at {sizes.spool_rate:,.0f} req/s, spooling",
                    down.p(q) * 1000, "ms", baseline=up.p(q) * 1000,
                    ratio=ratio(down.p(q), up.p(q)), note="baseline: broker up")
    section.add("spool: achieved rate while spooling", down.rate, "req/s", baseline=up.rate,
                ratio=ratio(down.rate, up.rate),
                note=f"failed {down.failed} / {up.failed}; statuses {dict(down.statuses)}")
    spooled = metrics.get("pushrelay_spool_appended_total", 0.0)
    if spooled:
        section.add("spool: events spooled (ingress metrics)", spooled, "")
