"""The fault suite's machinery: its own devstack, services as processes, load, accounting.

* :class:`FaultStack` — a devstack of its own (never the shared one), whose Kafka
  has a second listener, ``SLOW``, advertised on a proxy port, so the
  slow-network scenario can put a delaying proxy between the services and the
  broker while every other client keeps using the direct listener.
* :class:`ServiceProcess` — ``python -m ingress|router|refresher`` with a
  ``PUSHRELAY_*`` environment built from scratch, its log in a file.
* :class:`Pipeline` — the three of them for one scenario (own topics, groups).
* :class:`LoadGen` — :mod:`tests.faults.loadgen` as a process.
* :class:`RefreshTracker` — every refresh value each Warehouse of the scenario's
  namespace took, seen by a watch (with no help from the services).
* :func:`account` — pushes acknowledged vs. refreshes seen: the scenario's row.

The accounting rule. A ``202`` for push ``p`` obliges each Warehouse ``w`` that
``p`` matches to carry, eventually, a refresh value (RFC 3339 with nanoseconds,
written by the refresher on the same machine's clock) **later than the instant
``p`` was sent** (``sent_ns``, load generator clock, taken just before the
request is written). Not later than the client's receipt of the ``202``: the
event is in Kafka before the ``202`` leaves the ingress, and the router and
refresher can finish before the answer is read — the first runs measured a
refresh 1.5 ms *before* the load generator saw its ``202``, under CPU
contention. Refreshes older than the push do not count; one coalesced refresh
after several pushes satisfies all of them, which is exactly the promise (Kargo
reconciles on any new value and then sees every tag pushed before it). Most
Warehouses are matched by a single push each (:mod:`tests.faults.plan`), so a
lost event cannot hide behind a later one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.events import decode_push
from pushrelay.infra.kube.client import list_objects, request_json
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.informer import Informer
from pushrelay.infra.kube.resources import PROJECT_CONFIG, REFRESH_ANNOTATION, SECRET, WAREHOUSE
from pushrelay_devstack import kafka, procs
from pushrelay_devstack.stack import Devstack
from tests.faults.plan import Plan
from tests.faults.quay import QuayPolicy

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = "quay-faults"


def note(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_refresh_ns(value: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 refresh value (``...T..:..:..[.n]Z``)."""
    from datetime import UTC, datetime

    head, _, frac = value.rstrip("Z").partition(".")
    seconds = int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


# ---- the devstack -------------------------------------------------------------------


class FaultStack:
    """The suite's private devstack (own state dir, own ports), plus a SLOW listener."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.stack = Devstack(state_dir, apiserver_args=[], progress=note)
        self.slow_listener_port = 0
        self.slow_proxy_port = 0

    @property
    def paths(self) -> Any:
        return self.stack.paths

    @property
    def bootstrap(self) -> str:
        return self.stack.kafka_bootstrap

    @property
    def kubeconfig(self) -> Path:
        return self.stack.kubeconfig

    @property
    def slow_bootstrap(self) -> str:
        return f"127.0.0.1:{self.slow_proxy_port}"

    def up(self) -> None:
        self.stack.down(purge=True)  # leftovers of an interrupted run in this directory
        self.stack.up()
        self._add_slow_listener()

    def down(self) -> None:
        self.stack.down(purge=True)

    def _add_slow_listener(self) -> None:
        self.slow_listener_port = procs.free_port()
        self.slow_proxy_port = procs.free_port()
        while self.slow_proxy_port == self.slow_listener_port:
            self.slow_proxy_port = procs.free_port()
        self.stack.stop_kafka()
        cfg = self.paths.kafka_config
        props = dict(line.split("=", 1) for line in cfg.read_text().splitlines() if "=" in line)
        props["listeners"] += f",SLOW://127.0.0.1:{self.slow_listener_port}"
        props["advertised.listeners"] += f",SLOW://127.0.0.1:{self.slow_proxy_port}"
        props["listener.security.protocol.map"] += ",SLOW:PLAINTEXT"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.start_kafka()

    def kill(self, component: str) -> None:
        """kill -9 of a component's whole process group."""
        rec = procs.ProcRecord.load(self.paths.pid_record(component))
        assert rec is not None and procs.is_running(rec), f"{component} is not running"
        os.killpg(rec.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not procs.exited_early(rec):
            assert time.monotonic() < deadline, f"{component} survived SIGKILL"
            time.sleep(0.05)

    def kill_kafka(self) -> None:
        self.kill(kafka.COMPONENT)

    def kill_apiserver(self) -> None:
        self.kill("kube-apiserver")

    def start_kafka(self) -> None:
        """Start the broker on its port with the config as it is (keeps SLOW)."""
        libs = kafka.ensure_jars(lambda _msg: None)
        rec = kafka.start(libs, self.paths, self.stack._ports()[kafka.COMPONENT])
        kafka.wait_ready(rec, timeout=180)

    def stop_apiserver(self) -> None:
        self.stack.stop_apiserver()

    def start_apiserver(self, extra_args: Sequence[str] = ()) -> None:
        self.stack.start_apiserver(extra_args=list(extra_args))

    def apiserver_port(self) -> int:
        return int(self.stack._ports()["kube-apiserver"])

    def kubeconfig_via(self, port: int, source: Path, dest: Path) -> Path:
        """A copy of ``source`` whose server is ``https://127.0.0.1:<port>``."""
        text = source.read_text().replace(f"127.0.0.1:{self.apiserver_port()}",
                                          f"127.0.0.1:{port}")
        dest.write_text(text)
        return dest


# ---- processes ------------------------------------------------------------------------


def base_env() -> dict[str, str]:
    """The parent's environment without anything pointing at another stack."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PUSHRELAY_") and k != "KUBECONFIG"}


#: What each service process runs (``all-in-one``: the three in one process).
COMMANDS = {"ingress": ["-m", "ingress"], "router": ["-m", "router"],
            "refresher": ["-m", "refresher"], "all-in-one": ["-m", "pushrelay", "all-in-one"]}
#: The processes that serve the receivers on a public port of their own.
PUBLIC = ("ingress", "all-in-one")


class ServiceProcess:
    """One service process (:data:`COMMANDS`); restarts keep its ports and append to
    its log."""

    def __init__(self, service: str, env: dict[str, str], logdir: Path) -> None:
        self.service = service
        self.port = procs.free_port()  # where requests go (the ingress's public port)
        self.health_port = procs.free_port() if service in PUBLIC else self.port
        self.env = {**env, "PUSHRELAY_HEALTH_PORT": str(self.health_port)}
        if service in PUBLIC:
            self.env["PUSHRELAY_INGRESS_PORT"] = str(self.port)
        self.log = logdir / f"{service}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0
        self.kills = 0
        self.exits: list[int] = []  # exit codes we did not cause

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        self.started_at = time.monotonic()
        with self.log.open("ab") as out:
            out.write(f"\n==== start #{self.starts} {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            argv = [sys.executable, *COMMANDS[self.service]]
            if os.environ.get("PUSHRELAY_FAULTS_DEBUG") == "1":
                argv = [sys.executable, "-m", "tests.faults.debugwrap",
                        *COMMANDS[self.service][1:]]
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Record (and restart) a process that exited without being told to."""
        if self.proc is not None and self.proc.poll() is not None:
            self.exits.append(self.proc.returncode)
            note(f"{self.service} exited by itself with {self.proc.returncode}; restarting")
            self.proc = None
            self.start()

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
        assert self.proc is not None
        if sig == signal.SIGKILL:
            self.kills += 1
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -999

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    async def ready(self) -> bool:
        if not self.alive():
            return False
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.get(self.health_url + "/readyz") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def metric(self, name: str, labels: str = "") -> float:
        """One sample from the process's /metrics (0 when absent)."""
        async with aiohttp.ClientSession() as http, \
                http.get(self.health_url + "/metrics") as resp:
            text = await resp.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + (labels and "{")) and labels in line:
                total += float(line.rsplit(" ", 1)[1])
            elif not labels and line.split(" ")[0] == name:
                total += float(line.rsplit(" ", 1)[1])
        return total


async def eventually(predicate: Callable[[], Any], within: float, interval: float = 0.25,
                     what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {within:.0f}s")
        await asyncio.sleep(interval)


@dataclass
class Pipeline:
    """ingress, router, refresher as processes, with one scenario's topics and groups.

    ``data_dir`` set: one ``all-in-one`` process on the embedded bus
    (``PUSHRELAY_BUS=embedded``, ``PUSHRELAY_DATA_DIR``) instead, with no Kafka
    (its bootstrap points at a closed port, so any use of Kafka would show).
    """

    name: str
    kafka_bootstrap: str
    kubeconfig: Path
    logdir: Path
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"f{uuid.uuid4().hex[:8]}.")
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        common = {
            **base_env(),
            "KUBECONFIG": str(self.kubeconfig),
            "PUSHRELAY_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "PUSHRELAY_TOPIC_PREFIX": self.prefix,
            "PUSHRELAY_TOPIC_PARTITIONS": "3",
            "PUSHRELAY_ROUTER_GROUP": f"{self.prefix}router",
            "PUSHRELAY_REFRESHER_GROUP": f"{self.prefix}refresher",
            "PUSHRELAY_INGRESS_HOST": "127.0.0.1",
            "PUSHRELAY_HEALTH_HOST": "127.0.0.1",
            "PUSHRELAY_WRITE_STATUS": "true",
            "PUSHRELAY_LOG_FORMAT": "json",
            "PUSHRELAY_PUBLISH_TIMEOUT": "5",
            "PUSHRELAY_REFRESH_QPS": "50",
            "PUSHRELAY_REFRESH_BURST": "50",
            "PUSHRELAY_REFRESH_MIN_INTERVAL": "2",
            "PYTHONUNBUFFERED": "1",
        }
        services: tuple[str, ...] = ("ingress", "router", "refresher")
        if self.data_dir is not None:
            services = ("all-in-one",)
            common.update({"PUSHRELAY_BUS": "embedded", "PUSHRELAY_DATA_DIR": str(self.data_dir),
                           "PUSHRELAY_KAFKA_BOOTSTRAP": f"127.0.0.1:{procs.free_port()}"})
        self.procs: dict[str, ServiceProcess] = {}
        for service in services:
            env = {**common, **self.overrides.get(service, {})}
            self.procs[service] = ServiceProcess(service, env, self.logdir)
        ingress = self.ingress
        ingress.env["PUSHRELAY_BASE_URL"] = ingress.base_url

    @property
    def embedded(self) -> bool:
        return self.data_dir is not None

    @property
    def ingress(self) -> ServiceProcess:
        """The process serving the receivers (the ingress, or the all-in-one)."""
        return self.procs.get("ingress") or self.procs["all-in-one"]

    @property
    def router(self) -> ServiceProcess:
        return self.procs.get("router") or self.procs["all-in-one"]

    @property
    def refresher(self) -> ServiceProcess:
        return self.procs.get("refresher") or self.procs["all-in-one"]

    @property
    def push_topic(self) -> str:
        return f"{self.prefix}push-events"

    async def start(self) -> None:
        for proc in self.procs.values():
            proc.start()
        for proc in self.procs.values():
            await eventually(proc.ready, within=120, what=f"{proc.service} ready")

    def check_alive(self) -> None:
        for proc in self.procs.values():
            proc.check_alive()

    def stop(self) -> dict[str, int]:
        """SIGTERM each, ingress first (graceful stop); their exit codes."""
        codes = {}
        for service, proc in self.procs.items():
            if proc.alive():
                codes[service] = proc.kill(signal.SIGTERM, timeout=60)
        return codes

    def close(self) -> None:
        for proc in self.procs.values():
            proc.close()

    def unexpected_exits(self) -> dict[str, list[int]]:
        return {s: p.exits for s, p in self.procs.items() if p.exits}


# ---- the project: namespace, receiver, Warehouses ---------------------------------------


@dataclass
class Project:
    namespace: str
    secret: str
    plan: Plan
    path: str = ""

    @property
    def expected_path(self) -> str:
        digest = hashlib.sha256((self.namespace + RECEIVER + self.secret).encode()).hexdigest()
        return f"/quay/{digest}"


async def create_project(api: ApiClient, plan: Plan, prefix: str = "faults") -> Project:
    project = Project(f"{prefix}-{uuid.uuid4().hex[:6]}", f"s3cr3t-{uuid.uuid4().hex}", plan)
    ns = project.namespace
    await request_json(api, "POST", "/api/v1/namespaces",
                       body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    await request_json(api, "POST", SECRET.path(ns), body={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "quay-webhook"},
        "data": {"secret": base64.b64encode(project.secret.encode()).decode()}})
    await request_json(api, "POST", PROJECT_CONFIG.path(ns), body={
        "apiVersion": PROJECT_CONFIG.api_version, "kind": "ProjectConfig",
        "metadata": {"name": ns},
        "spec": {"webhookReceivers": [
            {"name": RECEIVER, "quay": {"secretRef": {"name": "quay-webhook"}}}]}})
    gate = asyncio.Semaphore(16)

    async def create(body: dict[str, Any]) -> None:
        async with gate:
            await request_json(api, "POST", WAREHOUSE.path(ns), body=body)

    await asyncio.gather(*(create(b) for b in plan.warehouses(ns)))
    return project


async def receiver_path_from_status(api: ApiClient, project: Project, within: float = 60) -> str:
    """The receiver path the ingress wrote to ``status.webhookReceivers``."""

    async def path() -> str | None:
        obj = await request_json(api, "GET", PROJECT_CONFIG.path(project.namespace,
                                                                 project.namespace))
        for entry in (obj.get("status") or {}).get("webhookReceivers") or []:
            if entry.get("name") == RECEIVER:
                return str(entry["path"])
        return None

    found = await eventually(path, within=within, interval=0.5, what="receiver status")
    assert found == project.expected_path, "status path differs from Kargo's formula"
    project.path = found
    return str(found)


async def delete_namespace(api: ApiClient, namespace: str) -> None:
    with contextlib.suppress(KubeError):
        await request_json(api, "DELETE", f"/api/v1/namespaces/{namespace}")


# ---- refresh values seen ----------------------------------------------------------------


class RefreshTracker:
    """Every distinct refresh value of every Warehouse in one namespace (watch + lists)."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.values: dict[str, set[int]] = {}
        self.informer = Informer(api, WAREHOUSE, self._on_change, namespace=namespace,
                                 max_backoff=2.0)

    def _on_change(self, _kind: str, obj: dict[str, Any]) -> None:
        self._record(obj)

    def _record(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        value = (meta.get("annotations") or {}).get(REFRESH_ANNOTATION)
        if value:
            self.values.setdefault(meta.get("name", ""), set()).add(parse_refresh_ns(value))

    async def start(self) -> None:
        await self.informer.start()
        await asyncio.wait_for(self.informer.synced.wait(), 60)

    async def stop(self) -> None:
        await self.informer.stop()

    async def list_now(self) -> None:
        """One authoritative LIST (what a missed watch event could have hidden)."""
        listing = await list_objects(self.api, WAREHOUSE, self.namespace)
        for obj in listing.get("items") or []:
            self._record(obj)

    def first_after(self, name: str, t_ns: int) -> int | None:
        later = [v for v in self.values.get(name, ()) if v > t_ns]
        return min(later) if later else None


# ---- load ----------------------------------------------------------------------------------


@dataclass
class Push:
    """One delivery attempt as the load generator recorded it; folded per push by
    :func:`fold` (the accepted attempt, else the last)."""

    p: int
    status: int | None
    sent_ns: int
    done_ns: int
    delivery: str | None
    retry_after: str | None
    error: str | None
    attempt: int = 0
    conn: bool = False  # no answer: the connection was refused or dropped
    retry: bool = False  # (Quay mode) the failure was scheduled for a retry
    disabled: bool = False  # (Quay mode) the notification was disabled after this answer


def fold(attempts: Sequence[Push]) -> list[Push]:
    """One record per push: its first ``202``'d attempt, else its last attempt."""
    by_p: dict[int, Push] = {}
    for a in sorted(attempts, key=lambda a: (a.p, a.attempt)):
        current = by_p.get(a.p)
        if current is None or current.status != 202:
            by_p[a.p] = a
    return [by_p[p] for p in sorted(by_p)]


class LoadGen:
    """The load generator process; its results once it is done.

    ``quay``: deliver as Quay does (retry after ``quay.retry_after`` s, disable a
    repository's notification after ``quay.disable_after`` consecutive failures);
    None: every push is sent once. ``pad_tags``: that many extra 100-character tags
    per push (big events).
    """

    def __init__(self, url: str, plan: Plan, workdir: Path, rate: float,
                 duration: float, count: int = 100_000, quay: QuayPolicy | None = None,
                 pad_tags: int = 0) -> None:
        self.out = workdir / "pushes.jsonl"
        self.stop_file = workdir / "loadgen.stop"
        self.log = workdir / "loadgen.log"
        self.quay = quay
        self.plan = plan
        for path in (self.out, self.stop_file):
            path.unlink(missing_ok=True)
        self.argv = [sys.executable, "-m", "tests.faults.loadgen", "--url", url,
                     "--plan", orjson.dumps(plan.as_json()).decode(), "--rate", str(rate),
                     "--count", str(count), "--duration", str(duration),
                     "--stop-file", str(self.stop_file), "--out", str(self.out),
                     "--pad-tags", str(pad_tags)]
        if quay is not None:
            self.argv += ["--quay", "--retry-after", str(quay.retry_after),
                          "--disable-after", str(quay.disable_after)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=base_env(),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)

    def _lines(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        lines = []
        for line in self.out.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(orjson.loads(line))
        return lines

    def attempts(self) -> list[Push]:
        """Every delivery attempt recorded so far."""
        return [Push(**line) for line in self._lines() if "summary" not in line]

    def progress(self) -> list[Push]:
        """One record per push so far (see :func:`fold`)."""
        return fold(self.attempts())

    def summary(self) -> dict[str, Any]:
        """The Quay sender's final state (disabled notifications...); {} before the end."""
        found = [line["summary"] for line in self._lines() if "summary" in line]
        return found[-1] if found else {}

    def acked(self) -> int:
        return sum(1 for push in self.attempts() if push.status == 202)

    def silenced(self) -> bool:
        """Every repository's notification is disabled: nothing more will be sent."""
        disabled = {self.plan.push(a.p)[0] for a in self.attempts() if a.disabled}
        return len(disabled) == self.plan.repos

    async def finish(self, within: float = 60) -> list[Push]:
        """Stop sending, wait for the answers in flight, return every push (folded)."""
        assert self.proc is not None
        self.stop_file.touch()
        await eventually(lambda: self.proc is not None and self.proc.poll() is not None,
                         within=within, what="load generator exit")
        assert self.proc.returncode == 0, self.log.read_text()[-2000:]
        return self.progress()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---- Kafka ---------------------------------------------------------------------------------


async def deliveries_in_topic(bootstrap: str, topic: str) -> set[str]:
    """Every delivery id on ``topic``, read from the beginning to the current end."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    found: set[str] = set()
    try:
        async with asyncio.timeout(120):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
            tps = sorted(consumer.assignment())
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        with contextlib.suppress(Exception):
                            delivery = decode_push(record.value).delivery
                            if delivery:
                                found.add(delivery)
    finally:
        await consumer.stop()
    return found


# ---- accounting ------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    sent: int = 0
    acked: int = 0
    unavailable: int = 0  # answers 503 (+ Retry-After), over every attempt
    failed: int = 0  # attempts answered otherwise, or not within the timeout (none expected)
    refused: int = 0  # attempts whose connection was refused or dropped (a killed ingress)
    spooled: int | None = None  # events the ingress spooled (None: no spool in the scenario)
    disabled: int | None = None  # notifications the Quay sender disabled (None: no Quay mode)
    expected: int = 0  # (push, Warehouse) pairs that must be refreshed after the 202
    warehouses: int = 0  # distinct Warehouses among them
    refreshed: int = 0
    lost: int = 0
    recover_s: float | None = None
    max_latency_s: float | None = None
    duration_s: float = 0.0
    faults: str = ""
    notes: list[str] = field(default_factory=list)
    passed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Pair:
    push: Push
    warehouse: str


def pairs_of(plan: Plan, pushes: Sequence[Push]) -> list[Pair]:
    return [Pair(push, w) for push in pushes if push.status == 202
            for w in plan.expected(push.p)]


def missing(tracker: RefreshTracker, pairs: Sequence[Pair]) -> list[Pair]:
    # one threshold per Warehouse suffices: the latest 202 that must be covered
    latest: dict[str, int] = {}
    for pair in pairs:
        latest[pair.warehouse] = max(latest.get(pair.warehouse, 0), pair.push.sent_ns)
    late = {w for w, t in latest.items() if tracker.first_after(w, t) is None}
    return [pair for pair in pairs if pair.warehouse in late
            and tracker.first_after(pair.warehouse, pair.push.sent_ns) is None]


async def settle(tracker: RefreshTracker, pairs: Sequence[Pair], within: float) -> None:
    """Wait until every pair is refreshed (or ``within`` s), then LIST once more."""
    deadline = time.monotonic() + within
    while missing(tracker, pairs) and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        if int(time.monotonic()) % 5 == 0:
            with contextlib.suppress(KubeError):
                await tracker.list_now()
    with contextlib.suppress(KubeError):
        await tracker.list_now()


def account(row: Row, plan: Plan, pushes: Sequence[Push], tracker: RefreshTracker,
            fault_end_ns: int | None, attempts: Sequence[Push] | None = None) -> Row:
    """Fill ``row`` from the pushes (folded, one per push) and their ``attempts``
    (every delivery attempt; the pushes themselves when each was sent once)."""
    attempts = pushes if attempts is None else attempts
    row.sent = len(pushes)
    row.acked = sum(1 for p in pushes if p.status == 202)
    row.unavailable = sum(1 for a in attempts if a.status == 503)
    row.refused = sum(1 for a in attempts if a.status is None and a.conn)
    row.failed = sum(1 for a in attempts if a.status not in (202, 503) and not a.conn)
    pairs = pairs_of(plan, pushes)
    row.expected = len(pairs)
    row.warehouses = len({pair.warehouse for pair in pairs})
    lost = missing(tracker, pairs)
    row.lost = len(lost)
    row.refreshed = row.expected - row.lost
    latencies = []
    recover = 0.0
    early = 0
    for pair in pairs:
        first = tracker.first_after(pair.warehouse, pair.push.sent_ns)
        if first is None:
            continue
        early += first <= pair.push.done_ns
        latencies.append((first - pair.push.sent_ns) / 1e9)
        if fault_end_ns is not None and pair.push.sent_ns <= fault_end_ns:
            recover = max(recover, (first - fault_end_ns) / 1e9)
    if early:
        row.notes.append(f"{early} refreshes landed before the load generator read the 202")
    row.max_latency_s = round(max(latencies), 1) if latencies else None
    row.recover_s = round(recover, 1) if fault_end_ns is not None and not lost else None
    decoys = [d for d in plan.decoys() if tracker.values.get(d)]
    if decoys:
        row.notes.append(f"decoy Warehouses refreshed: {decoys}")
    for pair in lost[:10]:
        seen = sorted(tracker.values.get(pair.warehouse, ()))
        row.notes.append(f"lost: push {pair.push.p} (sent at {pair.push.sent_ns}, delivery "
                         f"{pair.push.delivery}) -> {pair.warehouse}; values seen {seen[-3:]}")
    return row


# ---- SQLite files ----------------------------------------------------------------------


SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_files(directory: Path) -> list[Path]:
    """The SQLite databases in ``directory`` (by their header, whatever their names)."""
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.stat().st_size >= len(SQLITE_MAGIC):
            with path.open("rb") as fh:
                if fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                    found.append(path)
    return found


def quick_check(path: Path) -> str:
    """``PRAGMA quick_check`` of one database ("ok" when sound); blocking, call in a thread."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    finally:
        db.close()
    return "; ".join(str(r[0]) for r in rows)


# ---- a small disk ---------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``) mounted on ``path`` (root only),
    unmounted on the way out."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> int:
    """Write ``path`` until its filesystem has no byte left; the bytes written
    (blocking: call in a thread)."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            block = bytes(chunk)
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written
