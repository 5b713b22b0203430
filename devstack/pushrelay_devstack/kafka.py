"""Apache Kafka (single-node KRaft) from Maven Central jars.

The jars are resolved once with ``mvn dependency:copy-dependencies`` from a
throwaway pom (``kafka-pom.xml`` beside this file) into
``<cache>/kafka-<ver>/libs`` and the broker runs straight from the class path:
``java -cp 'libs/*' kafka.Kafka server.properties``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from pushrelay_devstack import procs
from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.paths import KAFKA_VERSION, SLF4J_VERSION, StatePaths, cache_dir

COMPONENT = "kafka"
HEAP = "-Xmx512m"

LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
"""


def _java(component: str = COMPONENT) -> str:
    java = shutil.which("java")
    if java is None:
        raise DevstackError(component, "`java` (17+) is not on PATH; install a JDK 17 to run Kafka")
    return java


def check_java() -> str:
    """The ``java`` to use; fails clearly when absent or older than 11 (17 recommended)."""
    java = _java()
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0_xyz" style
        major = int(match.group(2))
    if proc.returncode != 0 or major < 11:
        raise DevstackError(COMPONENT, f"{java} is not a usable Java 11+ (17 recommended): "
                            f"{proc.stderr.strip()[:200]}")
    return java


def ensure_jars(progress: Callable[[str], None], version: str = KAFKA_VERSION) -> Path:
    """``<cache>/kafka-<ver>/libs``, resolving it with Maven on first use."""
    home = cache_dir() / f"kafka-{version}"
    libs = home / "libs"
    marker = home / ".resolved"
    if marker.is_file() and any(libs.glob(f"kafka_2.13-{version}.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevstackError(COMPONENT, "`mvn` (Maven) is not on PATH; it resolves the Kafka jars")
    home.mkdir(parents=True, exist_ok=True)
    pom = resources.files("pushrelay_devstack").joinpath("kafka-pom.xml").read_text()
    pom = pom.replace("@KAFKA_VERSION@", version).replace("@SLF4J_VERSION@", SLF4J_VERSION)
    (home / "pom.xml").write_text(pom)
    log = home / "mvn.log"
    progress(f"resolving Kafka {version} jars from Maven Central (first run only); log: {log}")
    started = time.monotonic()
    tmp = home / "libs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with log.open("wb") as out:
        proc = subprocess.run(
            [mvn, "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False,
        )
    if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        raise DevstackError(COMPONENT, f"mvn could not resolve kafka_2.13:{version}", log)
    shutil.rmtree(libs, ignore_errors=True)
    tmp.replace(libs)
    marker.write_text(version)
    progress(f"resolved Kafka jars in {time.monotonic() - started:.0f}s -> {libs}")
    return libs


def listener_props(port: int, controller_port: int,
                   node: tuple[str, int] | None = None) -> dict[str, str]:
    """Loopback listener; with ``node`` (address, port: a devstack with a node) a
    second one, ``NODE``, advertised as itself, so a client bootstrapping from
    either address is told the address it can reach."""
    listeners = [f"PLAINTEXT://127.0.0.1:{port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if node is not None:
        listeners.append(f"NODE://{node[0]}:{node[1]}")
        protocols.append("NODE:PLAINTEXT")
    return {
        "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{controller_port}"]),
        "advertised.listeners": ",".join(listeners),
        "listener.security.protocol.map": ",".join(protocols),
    }


def write_config(paths: StatePaths, port: int, controller_port: int,
                 node: tuple[str, int] | None = None) -> None:
    cfg = paths.kafka_config
    cfg.parent.mkdir(parents=True, exist_ok=True)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        **listener_props(port, controller_port, node),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(paths.kafka_data),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    paths.kafka_log4j.write_text(LOG4J)


def _jvm(libs: Path, paths: StatePaths) -> list[str]:
    return [
        _java(), HEAP, "-Xms128m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{paths.kafka_log4j}",
        "-cp", f"{libs}/*",
    ]


def format_storage(libs: Path, paths: StatePaths) -> None:
    """Format the KRaft log dir once (``kafka.tools.StorageTool format``)."""
    if (paths.kafka_data / "meta.properties").exists():
        return
    paths.kafka_data.mkdir(parents=True, exist_ok=True)
    log = paths.log(COMPONENT)
    cluster_id = _cluster_id()
    argv = [*_jvm(libs, paths), "kafka.tools.StorageTool", "format",
            f"--cluster-id={cluster_id}", "-c", str(paths.kafka_config), "--ignore-formatted"]
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise DevstackError(COMPONENT, "kafka.tools.StorageTool format failed", log)


def _cluster_id() -> str:
    # 16 random bytes, URL-safe base64 without padding (22 chars), like Kafka's
    # own Uuid; one starting with "-" would read as an option, so draw again.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def start(libs: Path, paths: StatePaths, port: int) -> procs.ProcRecord:
    argv = [*_jvm(libs, paths), "kafka.Kafka", str(paths.kafka_config)]
    return procs.start(
        COMPONENT, argv, log=paths.log(COMPONENT), record=paths.pid_record(COMPONENT), port=port,
        env={"KAFKA_HEAP_OPTS": HEAP},
    )


async def _metadata(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    # "Unable connect" while the broker boots is expected; keep it off stderr
    # unless the application configured logging itself.
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    finally:
        await admin.close()


def is_ready(bootstrap: str) -> bool:
    """A real metadata request through aiokafka (in a private event loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _metadata(bootstrap)).result(timeout=15)


def wait_ready(rec: procs.ProcRecord, timeout: float = 240) -> None:
    """Until the broker answers metadata requests (it fails at once if the process
    exits). Generous: a broker restarted on a log with thousands of topics loads
    them all first (measured: over 90 s for ~2,400 on this 2-core machine)."""
    procs.wait_until(COMPONENT, lambda: is_ready(f"127.0.0.1:{rec.port}"), timeout=timeout,
                     rec=rec, what="answering metadata requests", interval=0.5)
