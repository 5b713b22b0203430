"""Benchmark 4: router events/second with 10,000 Warehouses indexed.

Extends the router's own measurements (tests/unit/test_router_perf.py for the
CPU ceiling, tests/integration/test_router_throughput.py for the process with
Kafka) and runs both here, on the bench devstack's 10,000 Warehouses
(bench/layout.py):

* process: ``router_events`` push events are produced to Kafka *before* the
  router starts — 90 % project-scoped (one match each), 10 % cluster-scoped
  (one match per index namespace) — then one ``python -m router`` process
  lists the Warehouses, joins its group and routes them all. The rate is
  events / (last refresh request seen − first one seen), so the initial LIST
  is not counted (it is reported as the time to ready).
* baseline, same run: bench/passthrough.py consumes the same events with the
  same consumer, producer and batch settings and relays each unchanged: Kafka
  in and out with no routing.
* CPU ceiling: the router's ``route_batch`` (decode, route, encode) in this
  process on an index of 10,000 Warehouses, no Kafka (the unit test's set-up).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import profiling
from bench.common import Context, Section, ServiceProc, ratio, say
from bench.layout import INDEX_PREFIX, REPOS, ensure_index
from bench.load import now
from pushrelay.core.events import PushEvent, Scope, encode
from pushrelay.core.matching import WarehouseIndex
from pushrelay.core.normalize import repo_urls
from pushrelay.infra.bus.kafka import KafkaBus, new_producer
from pushrelay.infra.settings import RouterSettings
from router.routing import route_batch

CLUSTER_SHARE = 10  # every 10th event is cluster-scoped


class Counter:
    """Counts the records arriving on one topic, with the first and last arrival."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False, fetch_max_wait_ms=50, metadata_max_age_ms=1000)
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.first_count = 0  # records in the first fetch (routed before ``first``)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            n = sum(len(r) for r in batch.values())
            if n:
                t = now()
                if not self.count:
                    self.first, self.first_count = t, n
                self.count += n
                self.last = t

    async def wait_for(self, expected: int, within: float) -> bool:
        deadline = now() + within
        while self.count < expected:
            if now() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


def events(ctx: Context, count: int) -> tuple[list[PushEvent], int]:
    """The events, and how many refresh requests they should produce."""
    sizes = ctx.sizes
    first = sizes.e2e_warehouses
    n_idx = sizes.index_namespaces * sizes.index_per_namespace
    per_repo = collections.Counter((first + j) % REPOS for j in range(n_idx))
    out = []
    expected = 0
    for i in range(count):
        j = (i * 7919) % n_idx  # index-set Warehouse, spread over namespaces
        ns = f"{INDEX_PREFIX}{j // sizes.index_per_namespace:02d}"
        repo_no = (first + j) % REPOS
        repo = f"quay.io/bench/repo-{repo_no}"
        cluster = i % CLUSTER_SHARE == CLUSTER_SHARE - 1
        out.append(PushEvent(repository=repo, repo_urls=repo_urls(repo), tags=["v1.2.3"],
                             scope=Scope(project=None if cluster else ns)))
        expected += per_repo[repo_no] if cluster else 1
    return out, expected


async def _produce(ctx: Context, settings: RouterSettings, batch: list[PushEvent]) -> None:
    producer = new_producer(settings, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(settings.push_topic, encode(e), key=e.key) for e in batch]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _measure(ctx: Context, proc: ServiceProc, counter: Counter, expected: int,
                   events_count: int) -> dict[str, Any]:
    await counter.start()
    started = now()
    await proc.start()
    peak = 0
    try:
        # Consuming starts after /readyz (the group is joined after it), so the CPU
        # from here on is the routing's; poll often to catch that moment.
        ready = await proc.wait_ready(within=300, interval=0.02)
        cpu_ready = proc.cpu()
        peak = proc.rss()[0]

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, proc.rss()[0])
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        try:
            done = await counter.wait_for(expected, within=300)
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        await asyncio.sleep(0.3)  # the last commit
        cpu = proc.cpu() - cpu_ready
        peak = max(peak, proc.rss()[0])
        hwm = proc.rss()[1]
    finally:
        code = await proc.stop()
        await counter.stop()
    seconds = counter.last - counter.first
    # Inputs handled between the first output and the last (outputs per input: fan-out).
    fan_out = counter.count / events_count if events_count else 1.0
    handled = (counter.count - counter.first_count) / fan_out
    return {"done": done, "outputs": counter.count, "seconds": seconds,
            "rate": handled / seconds if seconds > 0 else 0.0,
            "ready_s": ready, "to_first_s": counter.first - started if counter.count else 0.0,
            "rss_mib": peak / 1024, "hwm_mib": hwm / 1024, "cpu_s": cpu, "exit": code}


#: The CPU-ceiling index: as tests/unit/test_router_perf.py, through public APIs only.
CEILING_WAREHOUSES = 10_000
CEILING_REPOS = 1000


def ceiling_index() -> WarehouseIndex:
    index = WarehouseIndex()
    for j in range(CEILING_WAREHOUSES):
        index.upsert({
            "metadata": {"namespace": f"ns{j // 100}", "name": f"w{j}", "uid": str(j),
                         "generation": 1},
            "spec": {"subscriptions": [
                {"image": {"repoURL": f"quay.io/bench/repo{j % CEILING_REPOS}",
                           "constraint": "^1.0.0"}},
                {"git": {"repoURL": f"https://git.example.com/{j}.git"}}]}})
    return index


def cpu_ceiling() -> dict[str, float] | None:
    """Routing alone (decode, route, encode) with 10,000 Warehouses indexed, in process."""
    started = time.perf_counter()
    index = ceiling_index()
    built = time.perf_counter() - started
    records = []
    for i in range(5000):
        j = (i * 7919) % CEILING_WAREHOUSES
        repo = f"quay.io/bench/repo{j % CEILING_REPOS}"
        value = encode(PushEvent(repository=repo, repo_urls=[repo], tags=["v1.2.3"],
                                 scope=Scope(project=f"ns{j // 100}")))
        records.append(ConsumerRecord(
            topic="t", partition=0, offset=i, timestamp=0, timestamp_type=0, key=b"k",
            value=value, checksum=None, serialized_key_size=1,
            serialized_value_size=len(value), headers=()))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        out, _ = route_batch(index, records)
        best = min(best, time.perf_counter() - started)
    assert len(out) == len(records)
    return {"events_per_s": len(records) / best, "build_s": built,
            "warehouses": CEILING_WAREHOUSES}


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    targets = await ensure_index(ctx)
    batch, expected = events(ctx, sizes.router_events)
    prefix = ctx.prefix("router")
    env = ctx.service_env(prefix)
    settings = RouterSettings(kafka_bootstrap=ctx.bootstrap, topic_prefix=prefix)
    await KafkaBus(settings).ensure_topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=ctx.bootstrap)
    await admin.start()
    try:
        if f"{prefix}passthrough" not in set(await admin.list_topics()):
            await admin.create_topics([NewTopic(f"{prefix}passthrough",
                                                settings.topic_partitions, 1)])
    finally:
        await admin.close()
    await _produce(ctx, settings, batch)
    say(f"router bench: {len(batch)} events produced; {expected} requests expected")
    section.settings.update({
        "index": f"{len(targets)} Warehouses in the API server "
                 f"(created in {ctx.state.get('index_create_seconds', 0):.0f} s)",
        "events": f"{len(batch)} push events produced before the start "
                  f"({100 // CLUSTER_SHARE} % cluster-scoped); {expected} refresh requests",
        "router": "one `python -m router` process, defaults (log level INFO)",
        "baseline": "bench.passthrough: same consumer/producer/batch settings, relays "
                    "each record unchanged",
    })
    logs = ctx.run_dir / "logs"
    base_env = dict(env, PUSHRELAY_ROUTER_GROUP=f"{prefix}passthrough")
    base = await _measure(ctx, ServiceProc("bench.passthrough", base_env, logs,
                                           label="passthrough"),
                          Counter(ctx.bootstrap, f"{prefix}passthrough"), len(batch), len(batch))
    say(f"router bench: passthrough {base['rate']:,.0f} events/s")
    relay = await _measure(ctx, ServiceProc("router", env, logs, label="router"),
                           Counter(ctx.bootstrap, settings.refresh_topic), expected, len(batch))
    say(f"router bench: router {relay['rate']:,.0f} events/s, ready in {relay['ready_s']:.1f}s")
    if ctx.profile:  # a second router, in its own group, profiled while it routes it all
        spare = ServiceProc("router", dict(env, PUSHRELAY_ROUTER_GROUP=f"{prefix}profile"), logs,
                            label="router-profiled")
        await spare.start()
        try:
            await spare.wait_ready(within=300, interval=0.02)
            await profiling.record(ctx, {"router": spare.pid}, 5.0, asyncio.sleep(5.0))
        finally:
            await spare.stop()
    ceiling = await asyncio.to_thread(cpu_ceiling)

    section.add("events/s, one process (Kafka in and out)", relay["rate"], "/s",
                baseline=base["rate"], ratio=ratio(relay["rate"], base["rate"]),
                note=f"{len(batch)} events in {relay['seconds']:.1f} s")
    section.add("refresh requests/s", ratio(relay["outputs"], relay["seconds"]), "/s",
                baseline=ratio(base["outputs"], base["seconds"]))
    relay_us = ratio(relay["cpu_s"], len(batch)) * 1e6
    base_us = ratio(base["cpu_s"], len(batch)) * 1e6
    section.add("CPU per event", relay_us, "us", baseline=base_us, ratio=ratio(relay_us, base_us))
    section.add("requests produced / expected", relay["outputs"], "", note=f"of {expected}")
    section.add("time to ready (LIST of the index)", relay["ready_s"], "s",
                baseline=base["ready_s"])
    section.add("RSS while routing", relay["rss_mib"], "MiB", baseline=base["rss_mib"],
                ratio=ratio(relay["rss_mib"], base["rss_mib"]),
                note=f"lifetime peak {relay['hwm_mib']:.0f} MiB")
    if ceiling is not None:
        section.add("CPU ceiling: decode + route + encode", ceiling["events_per_s"], "/s",
                    note=f"in-process, {ceiling['warehouses']:,} Warehouses, no Kafka")
    if not relay["done"] or not base["done"]:
        section.notes.append(f"incomplete: router {relay['outputs']}/{expected}, "
                             f"passthrough {base['outputs']}/{len(batch)}")
