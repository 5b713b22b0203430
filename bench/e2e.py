"""Benchmark 2: push → annotation latency, end to end.

1,000 Warehouses in 20 namespaces (each namespace a project with its own Quay
receiver; Warehouse ``w<j>`` lives in namespace ``j mod 20`` and subscribes to
its own repository). Pushes arrive at 200/s for 60 s, open loop, round-robin
over the Warehouses: push ``i`` goes to Warehouse ``i mod 1000`` through its
project's receiver, so each Warehouse is pushed once every 5 s.

Latency of a push = the moment a watch on the Warehouses (the bench's own
informer, as Kargo's controller would watch) reads the *first* change of the
Warehouse's refresh annotation after the push was answered 202, minus the
moment the 202 arrived. Round-robin at 5 s per Warehouse keeps every push out
of the refresher's 2 s coalescing window, so each is a leading-edge patch; a
push landing inside a window would wait for the trailing patch instead (up
to ``PUSHRELAY_REFRESH_MIN_INTERVAL``) — by design, not by load.

Baseline, same run: the Kargo-like receiver at the same rate over the same
Warehouses. It patches before it answers, so for both the latency is also
given from the moment each request was due to be sent.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Sequence
from typing import Any

from bench import profiling
from bench.cluster import Target, payload
from bench.common import (
    Context,
    Section,
    ServiceProc,
    api_counts,
    busy_share,
    cpu_seconds,
    diff_counts,
    infra_cpu,
    machine_busy,
    percentile,
    ratio,
    say,
    write_detail,
    writes,
)
from bench.kargo_baseline import KargoBaseline
from bench.layout import E2E_PREFIX, ensure_e2e
from bench.load import Pool, RunResult, fixed_rate, now, post_request
from bench.watch import AnnotationWatch

PREFIX = E2E_PREFIX
WARMUP_SECONDS = 3.0
#: Write budget for this benchmark: above the offered load (200 patches/s, plus
#: a few Event writes), so latency is the pipeline's, not a
#: queue behind the budget. With the default 20 writes/s this load would queue.
QPS = 1000
BURST = 1000
#: Patches in flight: what the write rate times the API server's latency needs.
CONCURRENCY = 64


class Tracker:
    """Pushes waiting for their Warehouse's next annotation change."""

    def __init__(self, watch: AnnotationWatch) -> None:
        self.pending: dict[tuple[str, str], collections.deque[tuple[float, float]]] = \
            collections.defaultdict(collections.deque)
        self.from_answer: list[float] = []  # change - 202
        self.from_send: list[float] = []  # change - due time of the request
        self.early = 0  # the change was read before the 202 arrived
        self.accepted = 0
        self._watch = watch
        self._last: dict[tuple[str, str], float] = {}
        watch.listeners.append(self._changed)

    def close(self) -> None:
        self._watch.listeners.remove(self._changed)

    def answered(self, key: tuple[str, str], status: int, due: float, done: float) -> None:
        if not 200 <= status < 300:
            return
        self.accepted += 1
        last = self._last.get(key, 0.0)
        if last > due:  # already refreshed while the answer was on its way
            self.early += 1
            self.from_answer.append(0.0)
            self.from_send.append(last - due)
            return
        self.pending[key].append((due, done))

    def _changed(self, key: tuple[str, str], when: float) -> None:
        self._last[key] = when
        queue = self.pending.get(key)
        while queue and queue[0][1] <= when:
            due, done = queue.popleft()
            self.from_answer.append(when - done)
            self.from_send.append(when - due)

    @property
    def outstanding(self) -> int:
        return sum(len(q) for q in self.pending.values())


class RoundRobin:
    """Open-loop pushes at ``rate``/s, round-robin over ``targets`` through their
    projects' receivers. The position carries over from one run to the next (warm-up,
    measured run, baseline), so each Warehouse is pushed once every
    ``len(targets) / rate`` s throughout — outside the coalescing window."""

    def __init__(self, targets: Sequence[Target], rate: float) -> None:
        self.targets = list(targets)
        self.rate = rate
        self.bodies = {t.repo: post_request(t.path, payload(t.repo)) for t in targets}
        self.position = 0

    async def run(self, port: int, seconds: float, tracker: Tracker | None) -> RunResult:
        base, targets = self.position, self.targets

        def make(i: int) -> bytes:
            return self.bodies[targets[(base + i) % len(targets)].repo]

        def done(i: int, status: int, due: float, answered: float) -> None:
            if tracker is not None:
                tracker.answered(targets[(base + i) % len(targets)].key, status, due, answered)

        pool = Pool("127.0.0.1", port, 256)
        try:
            result = await fixed_rate(pool, make, self.rate, seconds, on_done=done)
        finally:
            pool.close()
        self.position += result.sent
        return result


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    targets = await ensure_e2e(ctx)
    namespaces = sorted({t.namespace for t in targets})
    section.settings.update({
        "layout": f"{len(targets)} Warehouses in {len(namespaces)} namespaces (projects), "
                  "one repository each; round-robin pushes",
        "load": f"{sizes.e2e_rate:g} pushes/s open loop for {sizes.e2e_seconds:g} s "
                f"(after a {WARMUP_SECONDS:g} s warm-up not counted)",
        "pushrelay": f"3 processes; PUSHRELAY_REFRESH_QPS={QPS}, REFRESH_BURST={BURST} "
                     f"(above the offered 200 patches/s), REFRESH_CONCURRENCY={CONCURRENCY} "
                     "(200 patches/s × up to 300 ms each under load), "
                     "REFRESH_MIN_INTERVAL=2 (default)",
        "baseline": "Kargo-like receiver, same rate, same Warehouses, "
                    f"{sizes.e2e_baseline_seconds:g} s",
    })

    watch = AnnotationWatch(ctx.api, prefix=PREFIX)
    await watch.start()
    load = RoundRobin(targets, sizes.e2e_rate).run

    logs = ctx.run_dir / "logs"
    env = ctx.service_env(ctx.prefix("e2e"), refresh_qps=QPS, refresh_burst=BURST,
                          refresh_concurrency=CONCURRENCY)
    procs = [ServiceProc(m, env, logs, label=f"e2e-{m}") for m in ("ingress", "router",
                                                                  "refresher")]
    relay: dict[str, Any] = {}
    try:
        await asyncio.gather(*(p.start() for p in procs))
        await asyncio.gather(*(p.wait_ready() for p in procs))
        await asyncio.sleep(1.0)
        await load(procs[0].port, WARMUP_SECONDS, None)
        await watch.quiet(2.5, within=30)
        tracker = Tracker(watch)
        before = await api_counts(ctx.stack)
        cpu_before = {p.label: p.cpu() for p in procs}
        infra_before = infra_cpu(ctx)
        infra_before["bench process (load + watch)"] = cpu_seconds(os.getpid())
        busy_before = machine_busy()
        result = await load(procs[0].port, sizes.e2e_seconds, tracker)
        cpu = {p.label: (p.cpu() - cpu_before[p.label]) / max(result.seconds, 1e-9)
               for p in procs}
        infra_after = infra_cpu(ctx)
        infra_after["bench process (load + watch)"] = cpu_seconds(os.getpid())
        cpu.update({name: (used - infra_before.get(name, 0.0)) / max(result.seconds, 1e-9)
                    for name, used in infra_after.items()})
        busy = busy_share(busy_before, machine_busy())
        if not await drained(tracker, 30.0):
            section.notes.append("pushrelay: some pushes saw no refresh within 30 s of the run")
        middle = await api_counts(ctx.stack)
        if ctx.profile:  # after the measured run: sampling costs CPU on a small machine
            seconds = min(sizes.e2e_seconds, 20.0)
            await profiling.record(
                ctx, {"e2e-router": procs[1].pid, "e2e-refresher": procs[2].pid,
                      "e2e-ingress": procs[0].pid}, seconds, load(procs[0].port, seconds, None))
        scraped: dict[str, float] = {}
        for p in procs:
            scraped.update(await p.metrics())
        relay = {"result": result, "tracker": tracker, "delta": diff_counts(middle, before),
                 "cpu": cpu, "metrics": scraped, "busy": busy}
    finally:
        codes = [await p.stop() for p in procs]
        if any(c != 0 for c in codes):
            section.notes.append(f"pushrelay exit codes: {codes}")
    # Every write the run caused, including Events flushed at the graceful stop.
    relay["all"] = diff_counts(await api_counts(ctx.stack), before)
    tracker = relay["tracker"]
    tracker.close()
    missing = tracker.outstanding
    say(f"e2e: pushrelay {tracker.accepted} accepted, p99 from 202 "
        f"{percentile(tracker.from_answer, 99) * 1000:.0f} ms, missing {missing}")

    kargo = KargoBaseline(ctx.api, {t.path: t.namespace for t in targets})
    await kargo.start()
    base_tracker = Tracker(watch)
    try:
        await asyncio.sleep(0.5)
        base_before = await api_counts(ctx.stack)
        busy_before = machine_busy()
        base_result = await load(kargo.port, sizes.e2e_baseline_seconds, base_tracker)
        base_busy = busy_share(busy_before, machine_busy())
        if not await drained(base_tracker, 15.0):
            section.notes.append("baseline: some pushes saw no refresh within 15 s")
        base_delta = diff_counts(await api_counts(ctx.stack), base_before)
    finally:
        base_tracker.close()
        await kargo.stop()
        await watch.stop()

    result = relay["result"]
    fa, fs = tracker.from_answer, tracker.from_send
    bs = base_tracker.from_send
    p99 = percentile(fa, 99) * 1000
    section.add("push→annotation p50 (from the 202)", percentile(fa, 50) * 1000, "ms")
    section.add("push→annotation p99 (from the 202)", p99, "ms", target="< 500 ms",
                met=p99 < 500 and missing == 0)
    section.add("push→annotation max (from the 202)", max(fa, default=float("nan")) * 1000,
                "ms")
    section.add("p50 from request sent", percentile(fs, 50) * 1000, "ms",
                baseline=percentile(bs, 50) * 1000,
                ratio=ratio(percentile(fs, 50), percentile(bs, 50)))
    section.add("p99 from request sent", percentile(fs, 99) * 1000, "ms",
                baseline=percentile(bs, 99) * 1000,
                ratio=ratio(percentile(fs, 99), percentile(bs, 99)))
    section.add("pushes accepted (2xx)", tracker.accepted, "", baseline=base_tracker.accepted,
                note=f"of {result.sent} / {base_result.sent} sent")
    section.add("accepted pushes with no refresh seen", missing, "",
                baseline=base_tracker.outstanding)
    section.add("achieved push rate", result.rate, "/s", baseline=base_result.rate)
    delta = relay["delta"]
    if delta:
        patches = delta.get(("PATCH", "warehouses"), 0.0)
        section.add("Warehouse PATCHes per accepted push", ratio(patches, tracker.accepted), "",
                    note="1.0 = one leading-edge patch per push")
        events = delta.get(("POST", "events"), 0.0) + delta.get(("PATCH", "events"), 0.0)
        section.add("Event writes per Warehouse PATCH", ratio(events, patches), "")
        every = relay["all"]
        section.add("API writes per accepted push (any resource)",
                    ratio(writes(every), tracker.accepted), "",
                    baseline=ratio(writes(base_delta), base_tracker.accepted),
                    ratio=ratio(ratio(writes(every), tracker.accepted),
                                ratio(writes(base_delta), base_tracker.accepted)),
                    note=write_detail(every))
        server = delta.get(("seconds:PATCH", "warehouses"), 0.0)
        section.add("mean API server time per Warehouse PATCH", ratio(server, patches) * 1000,
                    "ms", note="apiserver_request_duration_seconds")
    scraped = relay.get("metrics") or {}
    for name, label in (("pushrelay_ingress_publish_seconds", "ingress: Kafka ack wait"),
                        ("pushrelay_end_to_end_seconds", "routed (request created) → patched"),
                        ("pushrelay_refresher_patch_seconds", "refresher: PATCH call")):
        count = scraped.get(f"{name}_count", 0.0)
        if count:
            section.add(f"mean {label}", scraped.get(f"{name}_sum", 0.0) / count * 1000, "ms",
                        note="service metrics, warm-up included")
    section.add("machine CPU busy (all cores)", relay["busy"] * 100, "%", baseline=base_busy * 100,
                note=f"{len(os.sched_getaffinity(0))} CPUs; includes everything else running")
    for label, share in relay["cpu"].items():
        section.add(f"CPU of {label.removeprefix('e2e-')}", share * 100, "% of a core",
                    note="during the measured run")
    if tracker.early:
        section.notes.append(f"{tracker.early} refreshes were read before their 202 arrived "
                             "(counted as 0 ms)")


async def drained(tracker: Tracker, within: float) -> bool:
    """Wait until every accepted push saw its refresh; False after ``within`` s."""
    deadline = now() + within
    while tracker.outstanding:
        if now() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True
