"""Fixtures on the real devstack: one per session, isolation per test.

The chain: ``devstack_env`` (reuse a running devstack when ``KUBECONFIG`` and
``PUSHRELAY_KAFKA_BOOTSTRAP`` are set, else start one for the session) →
``kube`` (an admin API client) → ``namespace`` (a fresh namespace per test) and
``settings`` (a per-test topic prefix, so tests never see each other's events)
→ ``bus`` (the settings' bus, started, topics created).

``PUSHRELAY_TEST_KAFKA=testcontainers`` takes Kafka from testcontainers' Kafka
provider (a container of the locally built ``pushrelay-kafka`` image, see
``pushrelay_devstack.tckafka``) instead of the devstack's broker; the API server
is the devstack's either way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.bus import open_bus
from pushrelay.infra.bus.api import Bus
from pushrelay.infra.kube.client import new_api_client, request_json
from pushrelay.infra.settings import Settings


@pytest.fixture(scope="session")
def devstack_env() -> Iterator[dict[str, str]]:
    from pushrelay_devstack import tckafka
    from tests.devstack_fixtures import ensure_devstack

    env, stop = ensure_devstack()
    try:
        if tckafka.wanted():
            with tckafka.kafka() as bootstrap:
                yield {**env, "PUSHRELAY_KAFKA_BOOTSTRAP": bootstrap}
        else:
            yield env
    finally:
        stop()


@pytest.fixture(scope="session")
async def kube(devstack_env: dict[str, str]) -> AsyncIterator[ApiClient]:
    api = await new_api_client(devstack_env["KUBECONFIG"])
    try:
        yield api
    finally:
        await api.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def temporary_namespace(kube: ApiClient, prefix: str = "t") -> AsyncIterator[str]:
    """A fresh namespace, deleted (best effort) afterwards."""
    name = unique(prefix)
    await request_json(
        kube, "POST", "/api/v1/namespaces",
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    try:
        yield name
    finally:
        try:
            await request_json(kube, "DELETE", f"/api/v1/namespaces/{name}")
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


@pytest.fixture
async def namespace(kube: ApiClient) -> AsyncIterator[str]:
    async with temporary_namespace(kube) as name:
        yield name


@pytest.fixture
async def topic_prefix(devstack_env: dict[str, str]) -> AsyncIterator[str]:
    """The test's own topic prefix; its topics are deleted from the devstack's broker
    afterwards (closing what the test opened)."""
    from tests.integration.kafka_support import delete_topics

    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix
    await delete_topics(devstack_env["PUSHRELAY_KAFKA_BOOTSTRAP"], prefix)


@pytest.fixture
def settings(devstack_env: dict[str, str], topic_prefix: str) -> Settings:
    """Settings for one test: its own topics, ephemeral ports, fast coalescing."""
    return make_settings(devstack_env, topic_prefix)


#: The buses the pipeline tests run on (docs/bus.md): both keep the same behaviour.
BUSES = ("kafka", "embedded")


@asynccontextmanager
async def started_bus(settings: Settings) -> AsyncIterator[Bus]:
    """The bus ``settings`` name, started and its topics created, for the block."""
    the_bus = open_bus(settings)
    await the_bus.start()
    try:
        await the_bus.ensure_topics()
        yield the_bus
    finally:
        await the_bus.stop()


@pytest.fixture(params=BUSES)
async def bus(request: pytest.FixtureRequest, settings: Settings,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    """Each bus in turn: Kafka on the devstack (the test's topics), or an embedded
    log in a fresh directory. A test taking ``bus`` runs on both; the services
    under test get it injected, as all-in-one does."""
    if request.param == "embedded":
        data_dir = tmp_path_factory.mktemp("embedded-bus")
        settings = settings.model_copy(update={"bus": "embedded", "data_dir": str(data_dir)})
    async with started_bus(settings) as the_bus:
        yield the_bus


@pytest.fixture
async def kafka_bus(settings: Settings) -> AsyncIterator[Bus]:
    """Kafka only: for what the embedded bus does not have (several members of one
    consumer group, several partitions, other processes producing)."""
    async with started_bus(settings) as the_bus:
        yield the_bus


def make_settings(devstack_env: dict[str, str], topic_prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": devstack_env["PUSHRELAY_KAFKA_BOOTSTRAP"],
        "kubeconfig": devstack_env["KUBECONFIG"],
        "topic_prefix": topic_prefix,
        "topic_partitions": 3,
        "ingress_host": "127.0.0.1",
        "ingress_port": 0,
        "health_host": "127.0.0.1",
        "health_port": 0,
        "write_status": True,
        "log_format": "text",
        "router_group": f"{topic_prefix}router",
        "refresher_group": f"{topic_prefix}refresher",
        # Routers and ingresses watch the whole shared cluster, so every test's
        # Events compete for one recorder's budget: lift the production cap.
        "event_qps": 100,
    }
    values.update(overrides)
    return Settings(**values)


async def eventually(predicate: Any, within: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an (async or sync) predicate until truthy; the last value or TimeoutError."""
    async with asyncio.timeout(within):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(interval)
