"""The one service lifecycle, on the real devstack (docs/architecture.md, "Lifecycle").

* ``start()`` failing half-way leaves no task, connection or client behind, for
  each of the three services;
* a bug (not an API error) in the refresher's patch path is never
  dead-lettered: the service crashes, and after a restart the request is
  patched;
* with Kafka and the API server unreachable, SIGTERM ends every service
  process (the measured time is printed; see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kubernetes_asyncio.client import ApiClient

import ingress.service
import refresher.service
import router.service
from ingress.service import IngressService
from pushrelay.infra.bus import kafka as kafka_bus
from pushrelay.infra.deliveries import DeliveryLog
from pushrelay.infra.kube import client as kube_client
from pushrelay.infra.settings import Settings
from refresher.patcher import Patcher
from refresher.service import RefresherService
from router.service import RouterService
from tests.integration.conftest import eventually
from tests.integration.refresher_support import (
    create_warehouses,
    end_offsets,
    produce,
    request,
    running_refresher,
    watching,
)

ROOT = Path(__file__).resolve().parents[2]


class Injected(RuntimeError):
    """The failure a test injects half-way through a start."""


class Created:
    """Every API client and Kafka client a service made (through our factories)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
        self.apis: list[ApiClient] = []
        self.kafka: list[AIOKafkaProducer | AIOKafkaConsumer] = []
        new_api, new_producer = kube_client.new_api_client, kafka_bus.new_producer
        new_consumer = kafka_bus.new_consumer

        async def api(*args: Any, **kwargs: Any) -> ApiClient:
            self.apis.append(await new_api(*args, **kwargs))
            return self.apis[-1]

        def producer(*args: Any, **kwargs: Any) -> AIOKafkaProducer:
            self.kafka.append(new_producer(*args, **kwargs))
            return self.kafka[-1]

        def consumer(*args: Any, **kwargs: Any) -> AIOKafkaConsumer:
            self.kafka.append(new_consumer(*args, **kwargs))
            return self.kafka[-1]

        monkeypatch.setattr(module, "new_api_client", api)
        # Every Kafka client a service makes comes from the Kafka bus's factories.
        monkeypatch.setattr(kafka_bus, "new_producer", producer)
        monkeypatch.setattr(kafka_bus, "new_consumer", consumer)

    def leftovers(self) -> list[str]:
        left = [f"API client {i}" for i, api in enumerate(self.apis)
                if not api.rest_client.pool_manager.closed]
        left += [f"Kafka client {type(c).__name__}" for c in self.kafka
                 if not getattr(c, "_closed", False)]
        return left


def fail_ingress(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the API client, Events, informers, producer and delivery log started."""
    def build_app(*args: Any, **kwargs: Any) -> Any:
        raise Injected("the HTTP app could not be built")

    monkeypatch.setattr(ingress.service, "build_app", build_app)


def fail_router(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the API client, Events, the Warehouse informer and the producer started."""
    class FailingLog(DeliveryLog):
        async def start(self) -> None:
            raise Injected("the delivery log could not start")

    monkeypatch.setattr(router.service, "DeliveryLog", FailingLog)


def fail_refresher(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the API client, producer, Events, delivery log and engine started."""
    def rebalance(*args: Any, **kwargs: Any) -> Any:
        raise Injected("the rebalance listener could not be built")

    monkeypatch.setattr(refresher.service, "_Rebalance", rebalance)


CASES: dict[str, tuple[Any, Callable[[Settings], Any], Callable[[pytest.MonkeyPatch], None]]] = {
    "ingress": (ingress.service, IngressService, fail_ingress),
    "router": (router.service, RouterService, fail_router),
    "refresher": (refresher.service, RefresherService, fail_refresher),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_start_failing_half_way_leaves_nothing_behind(
    name: str, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    module, make, inject = CASES[name]
    created = Created(monkeypatch, module)
    inject(monkeypatch)
    before = asyncio.all_tasks()
    service = make(settings)
    with pytest.raises(Injected):
        await service.start()
    assert created.apis, "the failure must come after the API client was made"
    assert not created.leftovers()
    assert asyncio.all_tasks() - before == set(), "a task outlived the failed start"
    assert service.state == "stopped" and service.readiness() is not None
    await service.start()  # idempotent: a stopped service does not start again
    await service.stop()
    assert asyncio.all_tasks() - before == set()


async def test_a_bug_in_the_patch_path_is_retried_after_restart_never_dead_lettered(
    kube: ApiClient, namespace: str, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await create_warehouses(kube, namespace, ["app"])
    real = Patcher.refresh
    calls = 0

    async def buggy(self: Patcher, ref: Any) -> Any:
        nonlocal calls
        calls += 1
        raise TypeError("a bug in our own patch code")

    async with watching(kube, namespace) as watch:
        monkeypatch.setattr(Patcher, "refresh", buggy)
        async with running_refresher(settings) as first:
            await eventually(lambda: first.marks.partitions(), within=30)
            sent = await produce(settings, [request(namespace, "app", "d-bug")])
            await eventually(first.crashed.is_set, within=30)
            assert calls == 1 and first.reporter is not None
            assert first.reporter.dead_lettered == 0 and first.marks.outstanding() == 1
        assert await dead_letters(settings) == 0
        monkeypatch.setattr(Patcher, "refresh", real)  # the bug is fixed: restart
        async with running_refresher(settings) as second:
            await eventually(lambda: watch.refreshed_after(sent), within=30)
            await eventually(lambda: second.marks.outstanding() == 0, within=30)
            assert not second.crashed.is_set()
        assert await dead_letters(settings) == 0


async def dead_letters(settings: Settings) -> int:
    return sum((await end_offsets(settings, settings.dead_letter_topic)).values())


# ---- SIGTERM with nothing reachable ------------------------------------------------

def closed_port() -> int:
    from pushrelay_devstack.procs import free_port

    return free_port()  # nothing listens there: connections are refused


@pytest.fixture
def unreachable_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{closed_port()}",
  insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: nobody}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHRELAY_")}
    env.update({
        "KUBECONFIG": str(kubeconfig),
        "PUSHRELAY_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}",
        "PUSHRELAY_INGRESS_HOST": "127.0.0.1", "PUSHRELAY_INGRESS_PORT": "0",
        "PUSHRELAY_HEALTH_HOST": "127.0.0.1", "PUSHRELAY_HEALTH_PORT": "0",
        "PUSHRELAY_SHUTDOWN_TIMEOUT": "5", "PUSHRELAY_LOG_FORMAT": "text",
        "PUSHRELAY_LOG_LEVEL": "INFO",
    })
    yield env


@pytest.mark.parametrize("command", ["ingress", "router", "refresher", "all-in-one"])
def test_sigterm_ends_every_service_with_nothing_reachable(
    command: str, unreachable_env: dict[str, str], tmp_path: Path,
) -> None:
    """The process ends after SIGTERM (or on its own, having failed to start)."""
    sigterm_and_measure(command, unreachable_env, tmp_path)


@pytest.mark.parametrize("command", ["router", "refresher", "all-in-one"])
def test_sigterm_ends_every_service_with_the_api_server_unreachable(
    command: str, unreachable_env: dict[str, str], devstack_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Kafka up, the API server gone: every service starts, then SIGTERM ends it."""
    env = {**unreachable_env, "PUSHRELAY_KAFKA_BOOTSTRAP": devstack_env[
        "PUSHRELAY_KAFKA_BOOTSTRAP"], "PUSHRELAY_TOPIC_PREFIX": f"t{os.getpid()}{command}."}
    sigterm_and_measure(command, env, tmp_path)


def sigterm_and_measure(command: str, env: dict[str, str], tmp_path: Path) -> None:
    """Run ``pushrelay <command>``; SIGTERM once it runs; it must exit cleanly.

    The time from SIGTERM to exit is printed, not asserted (the machine is
    shared); the generous bound only catches a hang.
    """
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pushrelay", command],
                                env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_text(log, proc, ("services running", "failed to start", "Traceback"))
        exited_early = "services running" not in log.read_text(errors="replace")
        signalled = time.monotonic()
        if not exited_early:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5 * 6)
        elapsed = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    kafka = env["PUSHRELAY_KAFKA_BOOTSTRAP"]
    print(f"\n{command} (Kafka {kafka}, API server unreachable): "
          f"{'failed to start, no SIGTERM' if exited_early else 'SIGTERM'} -> "
          f"exit {code} after {elapsed:.2f}s (PUSHRELAY_SHUTDOWN_TIMEOUT=5)")
    assert code == (1 if exited_early else 0), text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "did not stop in time" not in text, text[-3000:]


def wait_for_text(log: Path, proc: subprocess.Popen[bytes], needles: tuple[str, ...],
                  within: float = 60.0) -> None:
    """Until the log shows one of ``needles`` or the process ended."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if proc.poll() is not None or any(n in text for n in needles):
            return
        time.sleep(0.05)
    raise AssertionError(f"no sign of life within {within}s:\n{log.read_text()[-2000:]}")
