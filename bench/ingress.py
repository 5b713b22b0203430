"""Benchmark 1: ingress throughput and latency against a bare aiohttp app.

(a) one ingress process (``python -m ingress``) with the bench devstack's real
Kafka broker, answering 202 only after ``acks=all``; (b) ``bench.bare``, the
same framework answering 202 with no work; (c) ``bench.minimal``, aiohttp +
aiokafka producing each body with ``acks=all`` before its 202 (issue 16, goal
4: the ingress should reach 0.8 of it). All are loaded by wrk with the same
Quay payload on one receiver path:

* saturation: wrk, 1 thread, ``wrk_connections`` connections, in rounds that
  alternate between (a) and (b) (3 x 10 s each = 30 s per target), so slow
  drift in the machine's background load hits both alike. req/s = all requests
  / all time; p50 = median of the rounds' p50; p99 = worst round's p99.
* fixed rate: 1,000 req/s open loop (bench/load.py) for ``fixed_seconds``;
  latency from each request's due time, so queueing is not hidden.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from bench import profiling
from bench.cluster import create_projects, payload
from bench.common import Context, Section, ServiceProc, ratio, say, stop_all
from bench.load import Pool, RunResult, fixed_rate, post_request
from pushrelay.infra.bus.kafka import KafkaBus
from pushrelay.infra.settings import CommonSettings

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post.lua"
NAMESPACE = "bench-ingress"
INSTALL_HINT = "wrk is missing: install it with `apt-get install -y wrk` (Debian/Ubuntu)"


def wrk_path() -> str | None:
    return shutil.which("wrk")


async def run_wrk(url: str, seconds: float, connections: int, body: bytes) -> dict[str, Any]:
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError(INSTALL_HINT)
    proc = await asyncio.create_subprocess_exec(
        wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), url, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={"BENCH_WRK_BODY": body.decode()})
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH_WRK "):
            data: dict[str, Any] = orjson.loads(line[len("BENCH_WRK "):])
            return data
    raise RuntimeError(f"wrk printed no summary:\n{out.decode(errors='replace')[-2000:]}")


def combine(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """wrk rounds as one: req/s over all the time, median p50, worst p99, errors."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["duration_us"] for r in rounds) / 1e6
    errors = sum(r[k] for r in rounds for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": requests / seconds if seconds else 0.0, "requests": requests,
        "p50_ms": statistics.median(r["p50_us"] for r in rounds) / 1000,
        "p99_ms": max(r["p99_us"] for r in rounds) / 1000,
        "errors": errors,
    }


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    if wrk_path() is None:
        raise RuntimeError(INSTALL_HINT)
    paths = await create_projects(ctx.api, [NAMESPACE])
    path = paths[NAMESPACE]
    body = payload("ingress")
    logs = ctx.run_dir / "logs"
    ingress = ServiceProc("ingress", ctx.service_env(ctx.prefix("ingress")), logs)
    bare = ServiceProc("bench.bare", ctx.service_env(ctx.prefix("bare")), logs, label="bare")
    bare.args = ["--port", str(bare.port)]
    # The same ingress with per-request log lines off: what INFO logging costs.
    quiet = ServiceProc("ingress", ctx.service_env(ctx.prefix("ingress-quiet"),
                                                   log_level="WARNING"), logs,
                        label="ingress-warning")
    # Issue 16, goal 4: the least an acknowledged push costs on this stack.
    minimal = ServiceProc("bench.minimal", ctx.service_env(ctx.prefix("minimal")), logs,
                          label="minimal", public=True)
    await KafkaBus(CommonSettings(kafka_bootstrap=ctx.bootstrap,
                                  topic_prefix=ctx.prefix("minimal"))).ensure_topics()
    section.settings.update({
        "ingress": "one `python -m ingress` process, defaults (log level INFO, uvloop), "
                   "real Kafka broker (acks=all, idempotent producer)",
        "baseline": "bench.bare: aiohttp, uvloop, reads the body, answers 202 JSON",
        "also": "the same ingress with PUSHRELAY_LOG_LEVEL=WARNING (no per-request log line)",
        "minimal": "bench.minimal: aiohttp + aiokafka, parses the body, produces it "
                   "(acks=all, idempotent, no linger), awaits the ack, answers 202",
        "wrk": f"-t1 -c{sizes.wrk_connections}, {sizes.wrk_rounds} alternating rounds of "
               f"{sizes.wrk_round_seconds:g} s per target",
        "fixed rate": f"{sizes.fixed_rate:g} req/s open loop for {sizes.fixed_seconds:g} s "
                      f"per target in {sizes.wrk_rounds + 1} alternating rounds (bench/load.py)",
    })
    procs = [ingress, bare, quiet, minimal]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        await asyncio.gather(*(p.wait_ready() for p in procs))
        targets = {"ingress": ingress, "bare": bare, "quiet": quiet, "minimal": minimal}
        await probe(ingress.port, path, body)
        await probe(quiet.port, path, body)
        await probe(minimal.port, path, body)
        for proc in procs:  # warm-up: connections, Kafka metadata, code paths
            await run_wrk(f"{proc.base}{path}", 1, sizes.wrk_connections, body)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        cpu: dict[str, float] = {name: 0.0 for name in targets}
        for r in range(sizes.wrk_rounds):
            order = ["bare", "minimal", "ingress", "quiet"]
            if r % 2:
                order.reverse()
            for name in order:
                proc = targets[name]
                before = proc.cpu()
                result = await run_wrk(f"{proc.base}{path}", sizes.wrk_round_seconds,
                                       sizes.wrk_connections, body)
                cpu[name] += proc.cpu() - before
                rounds[name].append(result)
                say(f"ingress bench: wrk round {r + 1} {name}: "
                    f"{result['requests'] / (result['duration_us'] / 1e6):,.0f} req/s, "
                    f"p99 {result['p99_us'] / 1000:.1f} ms")
        sat = {name: combine(rs) for name, rs in rounds.items()}
        us_per_req = {name: cpu[name] / max(1, sat[name]["requests"]) * 1e6 for name in sat}

        # Fixed rate, in alternating rounds too; latencies pooled per target.
        fixed: dict[str, RunResult] = {}
        round_p99: dict[str, list[float]] = {"bare": [], "ingress": []}
        raw = post_request(path, body)

        def same(_: int) -> bytes:
            return raw
        rounds_n = max(1, sizes.wrk_rounds + 1)
        for r in range(rounds_n):
            for name in (["bare", "ingress"] if r % 2 == 0 else ["ingress", "bare"]):
                pool = Pool("127.0.0.1", targets[name].port, 256)
                try:
                    res = await fixed_rate(pool, same, sizes.fixed_rate,
                                           sizes.fixed_seconds / rounds_n)
                finally:
                    pool.close()
                round_p99[name].append(res.p(99) * 1000)
                fixed[name] = fixed[name].merge(res) if name in fixed else res
                say(f"ingress bench: {sizes.fixed_rate:g} req/s round {r + 1} {name}: achieved "
                    f"{res.rate:,.0f}, p99 {res.p(99) * 1000:.1f} ms, failed {res.failed}")

        if ctx.profile:
            await profiling.record(ctx, {"ingress": ingress.pid}, sizes.wrk_round_seconds,
                                   run_wrk(f"{ingress.base}{path}", sizes.wrk_round_seconds,
                                           sizes.wrk_connections, body))
            await profiling.record(ctx, {"minimal": minimal.pid}, sizes.wrk_round_seconds,
                                   run_wrk(f"{minimal.base}{path}", sizes.wrk_round_seconds,
                                           sizes.wrk_connections, body))
        metrics = await ingress.metrics()
    finally:
        await stop_all(procs)

    a, b = sat["ingress"], sat["bare"]
    section.add("saturated throughput", a["rps"], "req/s", baseline=b["rps"],
                ratio=ratio(a["rps"], b["rps"]), target="ratio >= 0.5",
                met=ratio(a["rps"], b["rps"]) >= 0.5)
    m = sat["minimal"]
    section.add("saturated throughput against the minimal aiohttp + aiokafka app", a["rps"],
                "req/s", baseline=m["rps"], ratio=ratio(a["rps"], m["rps"]),
                target="ratio >= 0.8", met=ratio(a["rps"], m["rps"]) >= 0.8,
                note=f"CPU per request {us_per_req['ingress']:.0f} vs "
                     f"{us_per_req['minimal']:.0f} us")
    q = sat["quiet"]
    section.add("saturated throughput, PUSHRELAY_LOG_LEVEL=WARNING", q["rps"], "req/s",
                baseline=b["rps"], ratio=ratio(q["rps"], b["rps"]),
                note=f"{ratio(q['rps'], a['rps']):.2f}x the INFO figure; "
                     f"CPU {us_per_req['quiet']:.0f} us per request")
    section.add("p50 under saturation", a["p50_ms"], "ms", baseline=b["p50_ms"],
                ratio=ratio(a["p50_ms"], b["p50_ms"]))
    section.add("p99 under saturation", a["p99_ms"], "ms", baseline=b["p99_ms"],
                ratio=ratio(a["p99_ms"], b["p99_ms"]))
    section.add("errors / non-2xx under saturation", a["errors"], "", baseline=b["errors"])
    section.add("CPU per request (server process)", us_per_req["ingress"], "us",
                baseline=us_per_req["bare"],
                ratio=ratio(us_per_req["ingress"], us_per_req["bare"]))
    fa, fb = fixed["ingress"], fixed["bare"]
    section.add(f"p99 at {sizes.fixed_rate:,.0f} req/s", fa.p(99) * 1000, "ms",
                baseline=fb.p(99) * 1000, ratio=ratio(fa.p(99), fb.p(99)), target="< 25 ms",
                met=fa.p(99) * 1000 < 25 and fa.failed == 0,
                note="all rounds pooled; per round: " + " / ".join(
                    f"{v:.1f}" for v in round_p99["ingress"]) + " (baseline " + " / ".join(
                    f"{v:.1f}" for v in round_p99["bare"]) + ")")
    section.add(f"p50 at {sizes.fixed_rate:,.0f} req/s", fa.p(50) * 1000, "ms",
                baseline=fb.p(50) * 1000, ratio=ratio(fa.p(50), fb.p(50)))
    section.add(f"achieved rate (target {sizes.fixed_rate:,.0f})", fa.rate, "req/s",
                baseline=fb.rate, ratio=ratio(fa.rate, fb.rate),
                note=f"failed: {fa.failed} / {fb.failed}")
    count = metrics.get("pushrelay_ingress_publish_seconds_count", 0.0)
    if count:
        mean_ack = metrics.get("pushrelay_ingress_publish_seconds_sum", 0.0) / count * 1000
        section.add("mean Kafka ack wait (all runs)", mean_ack, "ms",
                    note="pushrelay_ingress_publish_seconds")
    section.notes.append(
        "p50/p99 under saturation are wrk's (closed loop: latency includes the "
        "connection's own queueing); the fixed-rate figures are open loop, from each "
        "request's due time.")


async def probe(port: int, path: str, body: bytes, within: float = 30.0) -> None:
    """The receiver answers 202 (receivers loaded and Kafka connected)."""
    pool = Pool("127.0.0.1", port, 1)
    deadline = time.monotonic() + within
    try:
        while True:
            status = await pool.request(post_request(path, body))
            if status == 202:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingress answers {status} on the receiver path")
            await asyncio.sleep(0.3)
    finally:
        pool.close()
