"""A Kafka outage: 503 + Retry-After within the bounded time, healthy process,
202 again once the broker is back, and every 202 is in the topic.

The broker is stopped and started for real. It is a private single-node Kafka
(the devstack's own jars and start code, its own state directory and ports), so
stopping it cannot disturb other tests using the shared devstack's broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from kubernetes_asyncio.client import ApiClient

from tests.integration.conftest import eventually, make_settings
from tests.integration.kafka_support import PrivateKafka
from tests.integration.kafka_support import private_kafka as start_private_kafka
from tests.integration.test_ingress_flow import post as post_push
from tests.integration.test_ingress_flow import (
    project_with_receiver,
    read_events,
    running_ingress,
)

PUBLISH_TIMEOUT = 2.0


@pytest.fixture
async def private_kafka(tmp_path: Path) -> AsyncIterator[PrivateKafka]:
    async with start_private_kafka(tmp_path / "kafka", started=True) as broker:
        yield broker


async def test_broker_outage(devstack_env: dict[str, str], topic_prefix: str, kube: ApiClient,
                             namespace: str, private_kafka: PrivateKafka) -> None:
    env = dict(devstack_env, PUSHRELAY_KAFKA_BOOTSTRAP=private_kafka.bootstrap)
    settings = make_settings(env, topic_prefix, publish_timeout=PUBLISH_TIMEOUT,
                             kafka_request_timeout=5.0, retry_after=30, topic_partitions=1)
    path = await project_with_receiver(kube, namespace)
    accepted: set[str] = set()
    async with ClientSession() as http, running_ingress(settings) as service:
        await eventually(lambda: service.registry.lookup(path), within=20)
        base = f"http://127.0.0.1:{service.port}"
        for _ in range(3):
            status, body, _ = await post_push(http, service, path)
            assert status == 202
            accepted.add(body["delivery"])

        await asyncio.to_thread(private_kafka.stop)
        for _ in range(5):
            started = time.monotonic()
            status, body, headers = await post_push(http, service, path)
            elapsed = time.monotonic() - started
            assert status == 503, body
            assert headers["Retry-After"] == "30" and "error" in body
            assert elapsed < PUBLISH_TIMEOUT + 1.5, elapsed
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200
        assert not service.crashed.is_set()

        async def not_ready() -> bool:
            async with http.get(f"http://127.0.0.1:{service.health_port}/readyz") as resp:
                return resp.status == 503
        await eventually(not_ready, within=15)

        await asyncio.to_thread(private_kafka.start)
        recovered_after = time.monotonic()
        while True:  # Quay retries every 30 s; here we retry fast until accepted
            status, body, _ = await post_push(http, service, path)
            if status == 202:
                accepted.add(body["delivery"])
                break
            assert status == 503
            assert time.monotonic() - recovered_after < 60, "no 202 after the broker came back"
            await asyncio.sleep(0.5)
        for _ in range(3):
            status, body, _ = await post_push(http, service, path)
            assert status == 202
            accepted.add(body["delivery"])
        assert not service.crashed.is_set()
        await eventually(lambda: service.readiness() is None, within=15)

    found = await read_events(settings, accepted, within=30)
    assert accepted <= set(found)
