"""Benchmark 7: what a push costs — CPU, Kafka messages and requests — and what idling costs.

Counting rather than timing (issue 16): CPU seconds from ``/proc/<pid>/stat``
and counts are robust on a busy machine, where latencies are not.

1. **Idle.** The three services (``python -m ingress|router|refresher``, defaults)
   started and ready on the e2e layout (1,000 Warehouses), no traffic for
   ``cost_idle_seconds``: each one's CPU as % of a core, the Kafka requests it
   sent per second, and the broker's CPU.
2. **Per push.** ``cost_rate`` pushes/s for ``cost_seconds`` (open loop,
   round-robin over the e2e Warehouses, each push a leading-edge refresh),
   then until every push's Warehouse was patched (the refresher's counter) and
   the deliveries topic is still: CPU µs per published push of each process
   and of the broker, messages per push on each topic (end offsets before and
   after, all partitions) and Kafka requests per push of each process, by
   kind (client side: :mod:`bench.kafkacount`).
3. **Baseline, same run:** :mod:`bench.minimal` (aiohttp + aiokafka, parse,
   produce with ``acks=all``, await the ack, 202) at the same rate, the same
   payloads: CPU µs per push of the app and of the broker, requests per push.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import profiling
from bench.cluster import payload
from bench.common import Context, Section, ServiceProc, cpu_seconds, infra_cpu, ratio, say
from bench.e2e import BURST, CONCURRENCY, QPS
from bench.layout import ensure_e2e
from bench.load import Pool, RunResult, fixed_rate, post_request
from pushrelay.infra.bus.kafka import KafkaBus
from pushrelay.infra.settings import CommonSettings

SERVICES = ("ingress", "router", "refresher")
TOPICS = ("push-events", "refresh-requests", "deliveries", "dead-letters")
#: Request kinds reported on their own; the rest are summed as "other".
KINDS = ("Produce", "Fetch", "OffsetCommit")
SETTLE_SECONDS = 5.0  # after readiness, before the idle window (group joins, first fetches)


class Offsets:
    """End offsets of a run's topics, summed over partitions."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                          enable_auto_commit=False)
        self._prefix = prefix

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def read(self) -> dict[str, int]:
        await self._consumer._client.force_metadata_update()  # noqa: SLF001 - new topics
        out: dict[str, int] = {}
        for name in TOPICS:
            topic = self._prefix + name
            parts = self._consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            ends = await self._consumer.end_offsets(tps) if tps else {}
            out[name] = sum(ends.values())
        return out


def _delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def _kinds(counts: Mapping[str, float]) -> dict[str, float]:
    """Counts of :data:`KINDS`, and the rest as ``other``."""
    out = {k: float(counts.get(k, 0)) for k in KINDS}
    out["other"] = float(sum(v for k, v in counts.items() if k not in KINDS))
    return out


def _kafka_cpu(ctx: Context) -> float:
    return sum(v for k, v in infra_cpu(ctx).items() if "kafka" in k.lower())


async def _load(ctx: Context, port: int, bodies: Callable[[int], bytes]) -> RunResult:
    pool = Pool("127.0.0.1", port, 256)
    try:
        return await fixed_rate(pool, bodies, ctx.sizes.cost_rate, ctx.sizes.cost_seconds)
    finally:
        pool.close()


async def _until(check: Callable[[], object], within: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        await asyncio.sleep(interval)
    return False


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    targets = await ensure_e2e(ctx)
    requests = [post_request(t.path, payload(t.repo)) for t in targets]
    sequence = [0]

    def bodies(i: int) -> bytes:
        return requests[(sequence[0] + i) % len(requests)]

    section.settings.update({
        "services": "python -m ingress|router|refresher, defaults (log level INFO), "
                    f"e2e layout ({len(targets)} Warehouses), PUSHRELAY_REFRESH_QPS={QPS}, "
                    f"REFRESH_BURST={BURST}, REFRESH_CONCURRENCY={CONCURRENCY}",
        "idle": f"{sizes.cost_idle_seconds:g} s without traffic, {SETTLE_SECONDS:g} s after ready",
        "load": f"{sizes.cost_rate:g} pushes/s open loop for {sizes.cost_seconds:g} s, "
                "round-robin (each push a leading-edge refresh), until every push is patched",
        "counting": "CPU from /proc/<pid>/stat; messages: topic end offsets; requests: "
                    "aiokafka's AIOKafkaConnection.send counted in each process (bench.kafkacount)",
        "baseline": "bench.minimal: aiohttp + aiokafka (parse, produce acks=all idempotent, "
                    "await the ack, 202), same rate and payloads",
    })
    logs = ctx.run_dir / "logs"
    prefix = ctx.prefix("cost")
    env = ctx.service_env(prefix, refresh_qps=QPS, refresh_burst=BURST,
                          refresh_concurrency=CONCURRENCY)
    procs = {m: ServiceProc(m, env, logs, label=f"cost-{m}", count_kafka=True)
             for m in SERVICES}
    offsets = Offsets(ctx.bootstrap, prefix)
    await offsets.start()
    try:
        await asyncio.gather(*(p.start() for p in procs.values()))
        await asyncio.gather(*(p.wait_ready() for p in procs.values()))
        await asyncio.sleep(SETTLE_SECONDS)
        # 1. idle
        say(f"cost: idle for {sizes.cost_idle_seconds:g} s")
        cpu0 = {m: p.cpu() for m, p in procs.items()}
        kafka0 = _kafka_cpu(ctx)
        req0 = {m: await p.kafka_requests() for m, p in procs.items()}
        t0 = time.monotonic()
        await asyncio.sleep(sizes.cost_idle_seconds)
        idle_s = time.monotonic() - t0
        idle_req = {m: _delta(await p.kafka_requests(), req0[m]) for m, p in procs.items()}
        idle_cpu = {m: (p.cpu() - cpu0[m]) / idle_s for m, p in procs.items()}
        idle_kafka = (_kafka_cpu(ctx) - kafka0) / idle_s
        for m in SERVICES:
            reqs = idle_req[m]
            detail = ", ".join(f"{k} {v / idle_s:.1f}" for k, v in sorted(reqs.items()) if v)
            section.add(f"idle: {m} CPU", idle_cpu[m] * 100, "% of a core", target="< 1 %",
                        met=idle_cpu[m] < 0.01,
                        note=f"Kafka requests/s: {sum(reqs.values()) / idle_s:.1f} ({detail})")
        section.add("idle: Kafka broker CPU (serving these three)", idle_kafka * 100,
                    "% of a core")
        # 2. per push
        warm = await _load_warm(ctx, procs["ingress"].port, bodies, sequence)
        say(f"cost: warm-up {warm} pushes; now {sizes.cost_rate:g}/s for {sizes.cost_seconds:g} s")
        patched0 = (await procs["refresher"].metrics()).get("pushrelay_refresher_patched_total", 0)
        off0 = await offsets.read()
        cpu0 = {m: p.cpu() for m, p in procs.items()}
        kafka0, bench0 = _kafka_cpu(ctx), cpu_seconds(os.getpid())
        req0 = {m: await p.kafka_requests() for m, p in procs.items()}
        result = await _load(ctx, procs["ingress"].port, bodies)
        sequence[0] += result.sent
        accepted = sum(n for s, n in result.statuses.items() if 200 <= s < 300)

        async def patched() -> bool:  # every published push's Warehouse patched
            done = (await procs["refresher"].metrics()).get("pushrelay_refresher_patched_total", 0)
            published = (await offsets.read())["push-events"] - off0["push-events"]
            return done - patched0 >= max(accepted, published)
        if not await _until(patched, 60.0):
            section.notes.append("not every push was patched within 60 s of the run")
        last = [-1]

        async def still() -> bool:
            now = (await offsets.read())["deliveries"]
            same, last[0] = now == last[0], now
            return same
        await _until(still, 30.0, interval=1.5)
        cpu = {m: p.cpu() - cpu0[m] for m, p in procs.items()}
        kafka = _kafka_cpu(ctx) - kafka0
        bench_cpu = cpu_seconds(os.getpid()) - bench0
        req = {m: _kinds(_delta(await p.kafka_requests(), req0[m])) for m, p in procs.items()}
        msgs = _delta(await offsets.read(), off0)
        scraped = await procs["ingress"].metrics()
        if scraped.get("pushrelay_ingress_publish_seconds_count"):
            section.add("mean Kafka ack wait of the ingress (whole run)",
                        scraped["pushrelay_ingress_publish_seconds_sum"]
                        / scraped["pushrelay_ingress_publish_seconds_count"] * 1000, "ms",
                        note="pushrelay_ingress_publish_seconds")
        if ctx.profile:  # after the counted run: sampling costs CPU on a small machine
            await profiling.record(ctx, {f"cost-{m}": p.pid for m, p in procs.items()},
                                   sizes.cost_seconds,
                                   _load(ctx, procs["ingress"].port, bodies))
    finally:
        await asyncio.gather(*(p.stop() for p in procs.values()), return_exceptions=True)
        await offsets.stop()

    base = await _baseline(ctx, bodies, sequence)
    # Per push = per event the ingress published: on a starved machine some 202s
    # arrive after the load generator's timeout, but their work was done all the same.
    n = max(int(msgs["push-events"]), 1)
    section.add("pushes published (push events)", n, "", baseline=base.n,
                note=f"of {result.sent} sent; {accepted} answered 2xx in time; "
                     f"achieved {result.rate:.0f}/s")
    total = sum(cpu.values())
    for m in SERVICES:
        row_base = base.cpu / base.n * 1e6 if m == "ingress" else None
        section.add(f"CPU per push: {m}", cpu[m] / n * 1e6, "us", baseline=row_base,
                    ratio=ratio(cpu[m] / n, base.cpu / base.n) if m == "ingress" else None)
    section.add("CPU per push: ingress + router + refresher", total / n * 1e6, "us",
                target="< 1000 us", met=total / n < 1e-3)
    section.add("CPU per push: Kafka broker", kafka / n * 1e6, "us",
                baseline=base.kafka / base.n * 1e6,
                ratio=ratio(kafka / n, base.kafka / base.n))
    section.add("CPU per push: bench process (load generator)", bench_cpu / n * 1e6, "us")
    section.add("Kafka messages per push (all topics)", sum(msgs.values()) / n, "",
                baseline=base.messages / base.n,
                note=", ".join(f"{t} {msgs[t] / n:.2f}" for t in TOPICS))
    for t in TOPICS:
        section.add(f"messages per push: {t}", msgs[t] / n, "")
    every = {k: sum(r[k] for r in req.values()) for k in (*KINDS, "other")}
    section.add("Kafka produce + fetch + commit requests per push (all services)",
                sum(every[k] for k in KINDS) / n, "",
                baseline=sum(base.requests[k] for k in KINDS) / base.n)
    for m in SERVICES:
        section.add(f"Kafka requests per push: {m}", sum(req[m].values()) / n, "",
                    baseline=sum(base.requests.values()) / base.n if m == "ingress"
                    else None,
                    note=", ".join(f"{k} {v / n:.3f}" for k, v in req[m].items()))
    ctx.state["cost"] = {"idle_cpu": idle_cpu, "cpu_us": {m: cpu[m] / n * 1e6 for m in cpu},
                         "kafka_us": kafka / n * 1e6, "messages": msgs, "requests": req}


async def _load_warm(ctx: Context, port: int, bodies: Callable[[int], bytes],
                     sequence: list[int]) -> int:
    """A few seconds of load first: connections, JIT-less warm caches, producers' metadata."""
    pool = Pool("127.0.0.1", port, 256)
    try:
        result = await fixed_rate(pool, bodies, ctx.sizes.cost_rate, 3.0)
    finally:
        pool.close()
    sequence[0] += result.sent
    await asyncio.sleep(3.0)
    return result.sent


@dataclass
class Baseline:
    """The minimal app's run: totals over ``n`` published pushes."""

    published: int
    cpu: float
    kafka: float
    messages: float
    requests: dict[str, float]

    @property
    def n(self) -> int:
        return max(self.published, 1)


async def _baseline(ctx: Context, bodies: Callable[[int], bytes],
                    sequence: list[int]) -> Baseline:
    """The minimal app at the same rate: its CPU, the broker's, its requests, per push."""
    prefix = ctx.prefix("cost-minimal")
    env = ctx.service_env(prefix)
    await KafkaBus(CommonSettings(kafka_bootstrap=ctx.bootstrap, topic_prefix=prefix)
                   ).ensure_topics()
    proc = ServiceProc("bench.minimal", env, ctx.run_dir / "logs", label="cost-minimal",
                       public=True, count_kafka=True)
    offsets = Offsets(ctx.bootstrap, prefix)
    await offsets.start()
    try:
        await proc.start()
        await proc.wait_ready()
        await _load_warm(ctx, proc.port, bodies, sequence)
        off0, cpu0, kafka0 = await offsets.read(), proc.cpu(), _kafka_cpu(ctx)
        req0 = await proc.kafka_requests()
        result = await _load(ctx, proc.port, bodies)
        sequence[0] += result.sent
        cpu, kafka = proc.cpu() - cpu0, _kafka_cpu(ctx) - kafka0
        req = _kinds(_delta(await proc.kafka_requests(), req0))
        msgs = _delta(await offsets.read(), off0)
    finally:
        await proc.stop()
        await offsets.stop()
    return Baseline(int(msgs["push-events"]), cpu, kafka, sum(msgs.values()), req)
