"""Plumbing shared by the benchmarks: the run context, service processes, RSS, metrics.

Every benchmark gets a :class:`Context`: the bench's own devstack (never the
shared one), an admin API client, a run directory for logs and profiles, and
the sizes to use (``--quick`` shrinks them). Services run as real processes
(``python -m ingress`` etc.) so that their CPU and RSS are their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient
from prometheus_client.parser import text_string_to_metric_families

from bench import kafkacount
from pushrelay_devstack.procs import free_port
from pushrelay_devstack.stack import Devstack

REPO_ROOT = Path(__file__).resolve().parent.parent
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"})


def say(text: str = "") -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---- statistics --------------------------------------------------------------

def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# ---- results -----------------------------------------------------------------

@dataclass
class Row:
    """One figure: pushrelay's value, the same-run baseline's, and the target."""

    metric: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Section:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def add(self, metric: str, value: float | None, unit: str = "", **kw: Any) -> Row:
        row = Row(metric, value, unit, **kw)
        self.rows.append(row)
        return row


# ---- the run context ---------------------------------------------------------

@dataclass
class Sizes:
    """How big each benchmark is; ``quick()`` is a smoke run of the same code."""

    wrk_rounds: int = 3
    wrk_round_seconds: float = 10.0  # 3 x 10 s = 30 s per target
    wrk_connections: int = 32
    fixed_rate: float = 1000.0
    fixed_seconds: float = 20.0
    amp_pushes: int = 1000
    amp_warehouses: int = 50
    e2e_rate: float = 200.0
    e2e_seconds: float = 60.0
    e2e_baseline_seconds: float = 20.0
    e2e_namespaces: int = 20
    e2e_per_namespace: int = 50
    bus_light_rate: float = 50.0  # bench 7: push→annotation also at a rate one process sustains
    spool_rate: float = 200.0  # bench 7's spool comparison: below either path's saturation
    spool_seconds: float = 20.0
    index_namespaces: int = 90  # + the e2e ones: 10,000 Warehouses in all
    index_per_namespace: int = 100
    router_events: int = 20_000
    soak_rate: float = 100.0
    soak_seconds: float = 600.0
    secrets_unrelated: int = 2_000
    secrets_namespaces: int = 20
    secrets_bytes: int = 100_000
    secrets_runs: int = 3
    cost_idle_seconds: float = 60.0
    cost_rate: float = 150.0
    cost_seconds: float = 30.0

    @classmethod
    def quick(cls) -> Sizes:
        # e2e keeps its full layout: at 200/s every Warehouse must see a push only
        # every 5 s (outside the coalescing window), which needs 1,000 of them.
        return cls(wrk_rounds=1, wrk_round_seconds=3.0, fixed_seconds=3.0, amp_pushes=200,
                   amp_warehouses=10, e2e_seconds=8.0, e2e_baseline_seconds=4.0,
                   spool_seconds=4.0,
                   index_namespaces=4, index_per_namespace=100, router_events=2_000,
                   soak_seconds=20.0, secrets_unrelated=200, secrets_runs=1,
                   cost_idle_seconds=10.0, cost_seconds=5.0)

    @property
    def e2e_warehouses(self) -> int:
        return self.e2e_namespaces * self.e2e_per_namespace

    @property
    def total_warehouses(self) -> int:
        return self.e2e_warehouses + self.index_namespaces * self.index_per_namespace


@dataclass
class Context:
    sizes: Sizes
    quick: bool
    run_dir: Path
    stack: Devstack
    env: dict[str, str]  # KUBECONFIG, PUSHRELAY_KAFKA_BOOTSTRAP of the bench devstack
    api: ApiClient
    profile: bool = False
    #: ``--service-setting``: PUSHRELAY_<NAME> for every service process, over the bench's own
    service_settings: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # what one bench leaves the next
    run_id: str = field(default_factory=lambda: f"{int(time.time()) % 1_000_000:06d}")

    def prefix(self, name: str) -> str:
        """A topic prefix of this run: a reused devstack's old topics are never read."""
        return f"bench-{self.run_id}-{name}."

    @property
    def kubeconfig(self) -> str:
        return self.env["KUBECONFIG"]

    @property
    def bootstrap(self) -> str:
        return self.env["PUSHRELAY_KAFKA_BOOTSTRAP"]

    def service_env(self, prefix: str, **settings: str | float | int) -> dict[str, str]:
        """The environment of a service process: nothing PUSHRELAY_* leaks in from
        the caller's shell (it may point at the shared devstack)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PUSHRELAY_") and k != "KUBECONFIG"}
        env.update({
            "KUBECONFIG": self.kubeconfig,
            "PUSHRELAY_KAFKA_BOOTSTRAP": self.bootstrap,
            "PUSHRELAY_TOPIC_PREFIX": prefix,
            "PUSHRELAY_ROUTER_GROUP": f"{prefix}router",
            "PUSHRELAY_REFRESHER_GROUP": f"{prefix}refresher",
            "PUSHRELAY_HEALTH_HOST": "127.0.0.1",
            "PUSHRELAY_INGRESS_HOST": "127.0.0.1",
            "PUSHRELAY_WRITE_STATUS": "false",
        })
        env.update({f"PUSHRELAY_{k.upper()}": str(v) for k, v in settings.items()})
        env.update({f"PUSHRELAY_{k}": v for k, v in self.service_settings.items()})
        return env


# ---- service processes -------------------------------------------------------

def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return float(sum(fields) - idle), float(sum(fields))


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of the machine's CPU time that was busy between two readings (0..1)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else float("nan")


def infra_cpu(ctx: Context) -> dict[str, float]:
    """CPU seconds so far of the devstack's processes (API server, etcd, Kafka)."""
    return {s.name: cpu_seconds(s.pid) for s in ctx.stack.status()
            if s.pid is not None and s.running}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {``name{labels}``: value} (labels sorted), plus per-name sums."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


class ServiceProc:
    """``python -m <module>`` with its log in the run directory and a health port.

    :attr:`port` / :attr:`base` is where requests go (the ingress's public port);
    ``/readyz`` and ``/metrics`` are read on :attr:`health_port` (the same port
    for every other module). ``public``: the process serves receivers on a port of
    its own (the ingress always does; ``pushrelay all-in-one`` too).
    """

    def __init__(self, module: str, env: dict[str, str], log_dir: Path, *,
                 label: str | None = None, args: list[str] | None = None,
                 wrapper: list[str] | None = None, public: bool | None = None,
                 count_kafka: bool = False) -> None:
        """``public``: the module serves a public port beside its health port (default:
        only ``ingress``); ``count_kafka``: run it under :mod:`bench.kafkacount`
        (read with :meth:`kafka_requests`)."""
        self.module = module
        self.label = label or module
        self.port = free_port()
        self.health_port = self.port
        self.env = dict(env)
        self.counts_path: Path | None = None
        if count_kafka:
            self.counts_path = log_dir / f"{self.label}.kafka-requests.json"
            self.env[kafkacount.ENV] = str(self.counts_path)
        if module == "ingress" if public is None else public:
            self.health_port = free_port()
            self.env["PUSHRELAY_INGRESS_PORT"] = str(self.port)
            self.env["PUSHRELAY_BASE_URL"] = f"http://127.0.0.1:{self.port}"
        self.env["PUSHRELAY_HEALTH_PORT"] = str(self.health_port)
        self.args = args or []
        self.wrapper = wrapper or []
        self.log_path = log_dir / f"{self.label}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_base(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.wrapper, sys.executable, "-m",
                *(["bench.kafkacount"] if self.counts_path else []), self.module, *self.args,
                env=self.env, cwd=str(REPO_ROOT), stdout=log, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL)
        self.started_at = time.monotonic()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, within: float = 120.0, interval: float = 0.2) -> float:
        """Poll ``/readyz`` every ``interval`` s; seconds from start to ready."""
        assert self.proc is not None
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n"
                                       f"{self.log_tail()}")
                try:
                    async with http.get(f"{self.health_base}/readyz",
                                        timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return time.monotonic() - self.started_at
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(interval)
        raise RuntimeError(f"{self.label} not ready within {within:.0f}s:\n{self.log_tail()}")

    async def metrics(self) -> dict[str, float]:
        async with aiohttp.ClientSession() as http, http.get(
                f"{self.health_base}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return parse_metrics(await resp.text())

    async def kafka_requests(self, within: float = 30.0) -> dict[str, int]:
        """Kafka requests this process sent so far, by kind (``count_kafka`` only)."""
        assert self.counts_path is not None and self.proc is not None
        seq, _ = kafkacount.read(self.counts_path)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            now_seq, counts = kafkacount.read(self.counts_path)
            if now_seq > seq:
                return counts
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.label}: no Kafka request counts within {within:.0f}s")

    def rss(self) -> tuple[int, int]:
        return rss_kib(self.pid) if self.proc is not None else (0, 0)

    def cpu(self) -> float:
        return cpu_seconds(self.pid) if self.proc is not None else 0.0

    async def stop(self, within: float = 40.0) -> int | None:
        """SIGTERM (graceful stop), SIGKILL after ``within`` s; the exit code."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return proc.returncode if proc is not None else None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return None


async def stop_all(procs: Iterable[ServiceProc]) -> None:
    await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)


# ---- the API server's own counters -----------------------------------------------

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def apiserver_requests(stack: Devstack) -> dict[tuple[str, str], float]:
    """``apiserver_request_total`` summed by (verb, resource) (sync; run in a thread),
    plus ``("seconds:" + verb, resource)``: the server's own handling time, summed.

    Its /metrics page is megabytes of histograms: only the lines of these
    series are parsed.
    """
    status, body = stack.admin_client().request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"apiserver /metrics answered {status}")
    series = {"apiserver_request_total{": "",
              "apiserver_request_duration_seconds_sum{": "seconds:"}
    totals: dict[tuple[str, str], float] = {}
    for line in body.decode().splitlines():
        if not line.startswith("apiserver_request"):
            continue
        found = next(((h, t) for h, t in series.items() if line.startswith(h)), None)
        if found is None:
            continue
        head, tag = found
        labels_text, _, value = line[len(head):].rpartition("}")
        labels = dict(_LABEL.findall(labels_text))
        key = (tag + labels.get("verb", ""), labels.get("resource", ""))
        totals[key] = totals.get(key, 0.0) + float(value.split()[0])
    return totals


async def api_counts(stack: Devstack) -> dict[tuple[str, str], float]:
    return await asyncio.to_thread(apiserver_requests, stack)


def diff_counts(after: dict[tuple[str, str], float],
                before: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def writes(delta: dict[tuple[str, str], float], resource: str | None = None) -> float:
    return sum(v for (verb, res), v in delta.items()
               if verb in WRITE_VERBS and (resource is None or res == resource))


def write_detail(delta: dict[tuple[str, str], float]) -> str:
    """``VERB resource: n`` for every kind of write in a counter delta."""
    return "; ".join(f"{verb} {res or '-'}: {v:.0f}" for (verb, res), v in sorted(delta.items())
                     if verb in WRITE_VERBS)
