"""What each step of an accepted push costs the ingress, measured in isolation.

The ingress's CPU per request (benchmark 1) is the sum of many small steps.
Each is timed here on its own (CPU time per call, best of 3 runs of ``N``
calls) with the very objects the ingress uses, so the profile's shares can be
read as microseconds and a proposed change as an expected gain. The Kafka step
is one ``send`` to the bench devstack's broker with the ingress's producer
settings, acknowledged (``acks=all``), at a steady pipeline of sends.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from bench.cluster import Target, create_projects, create_warehouses, payload
from bench.common import Context, Section, ratio
from pushrelay.core.deliveries import DeliveryFact
from pushrelay.core.events import encode, new_id
from pushrelay.infra import metrics
from pushrelay.infra.bus.kafka import KafkaBus, new_producer
from pushrelay.infra.kube.client import merge_patch, new_api_client
from pushrelay.infra.kube.events import EventRecorder, ObjectRef
from pushrelay.infra.kube.resources import PROJECT_CONFIG, WAREHOUSE
from pushrelay.infra.logs import JsonFormatter
from pushrelay.infra.settings import IngressSettings

N = 20_000
MICRO_NAMESPACE = "bench-micro"
MICRO_WAREHOUSE = "micro"


def cpu_per_call(func: Callable[[], Any], n: int = N) -> float:
    """µs of CPU per call, best of 3."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(n):
            func()
        best = min(best, time.process_time() - started)
    return best / n * 1e6


def steps() -> list[tuple[str, float]]:
    from ingress.payload import build_event, encoded, parse_push  # the service's own code
    from pushrelay.core.events import PushEvent, Scope

    body = payload("micro")
    push = parse_push(body)
    event = build_event(push, project="bench", receiver="quay", delivery=new_id())
    model = PushEvent(source="quay", scope=Scope(project="bench"), receiver="quay",
                      repository=push.docker_url, repo_urls=event.repo_urls, tags=push.tags,
                      delivery=event.delivery)
    recorder = EventRecorder(None, "bench")  # type: ignore[arg-type] # record() is memory-only
    ref = ObjectRef(PROJECT_CONFIG, "bench", "bench")
    logger = logging.getLogger("bench.micro")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    extra = {"delivery": "d" * 32, "receiver": "quay", "hash": "abcdef01", "project": "bench",
             "event": "e" * 32, "repository": push.docker_url, "tags": 1,
             "test_notification": False}

    def fact() -> bytes:
        f = DeliveryFact(delivery="d" * 32, stage="ingress", outcome="accepted",
                         receiver="quay", project="bench", repository=push.docker_url,
                         tags=push.tags)
        return orjson.dumps(f.model_dump(mode="json", by_alias=True))

    def log_line() -> None:
        logger.info("accepted push", extra=extra)
        handler.stream.seek(0)
        handler.stream.truncate()

    def counters() -> None:
        metrics.received.inc()
        metrics.publish_latency.observe(0.004)
        metrics.published.inc()

    def response() -> web.Response:
        return web.json_response({"msg": "accepted", "delivery": "d" * 32}, status=202,
                                 headers={"X-Pushrelay-Delivery": "d" * 32})

    def response_orjson() -> web.Response:
        return web.json_response({"msg": "accepted", "delivery": "d" * 32}, status=202,
                                 headers={"X-Pushrelay-Delivery": "d" * 32},
                                 dumps=lambda o: orjson.dumps(o).decode())

    return [
        ("parse the body (orjson + checks)", cpu_per_call(lambda: parse_push(body))),
        ("build + encode the push event (the ingress: dataclass + orjson)", cpu_per_call(
            lambda: encoded(build_event(push, project="bench", receiver="quay",
                                        delivery="d" * 32)))),
        ("the same with the model (pydantic validation + model_dump_json)", cpu_per_call(
            lambda: encode(PushEvent(source="quay", scope=Scope(project="bench"),
                                     receiver="quay", repository=push.docker_url,
                                     repo_urls=event.repo_urls, tags=push.tags,
                                     delivery="d" * 32)))),
        ("encode the event model (model_dump_json)", cpu_per_call(lambda: encode(model))),
        ("two ids (uuid4().hex)", cpu_per_call(lambda: (new_id(), new_id()))),
        ("delivery fact (pydantic + dump + orjson)", cpu_per_call(fact)),
        ("aggregated Event record (sha256 + dict)", cpu_per_call(
            lambda: recorder.record(ref, "DeliveryAccepted", "receiver 'quay' accepted a push"))),
        ("one JSON log line (INFO)", cpu_per_call(log_line)),
        ("Prometheus counters + histogram", cpu_per_call(counters)),
        ("202 response object (stdlib json)", cpu_per_call(response)),
        ("202 response object (orjson dumps=)", cpu_per_call(response_orjson)),
    ]


async def kafka_send(ctx: Context, n: int = 5000) -> float:
    """µs of CPU per acknowledged send (the ingress's producer settings)."""
    settings = IngressSettings(kafka_bootstrap=ctx.bootstrap, topic_prefix=ctx.prefix("micro"))
    await KafkaBus(settings).ensure_topics()
    producer = new_producer(settings, client_id="bench-micro")
    await producer.start()
    value = orjson.dumps({"x": "y" * 400})
    try:
        for _ in range(2):  # warm-up, then the measured run
            started = time.process_time()
            inflight: set[asyncio.Future[Any]] = set()
            for i in range(n):
                fut = await producer.send(settings.push_topic, value, key=f"k{i % 97}".encode())
                inflight.add(fut)
                if len(inflight) >= 64:  # about the ingress's concurrency under wrk
                    done, inflight = await asyncio.wait(inflight,
                                                        return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(*inflight)
            cost = (time.process_time() - started) / n * 1e6
    finally:
        await producer.stop()
    return cost


async def patch_cost(ctx: Context, stock: bool, n: int = 400) -> tuple[float, float]:
    """(µs CPU, ms wall) per refresh PATCH through pushrelay's API client, sequential.

    ``stock``: as kubernetes_asyncio builds its aiohttp session, with
    ``trust_env=True``, which costs two worker-thread round trips per request (a
    ``.netrc`` lookup and a proxy lookup). pushrelay's client reads the
    environment once instead (pushrelay.infra.kube.client.new_api_client)."""
    api = await new_api_client(ctx.kubeconfig)
    if stock:
        api.rest_client.pool_manager._trust_env = True
    try:
        body = {"metadata": {"annotations": {"bench/micro": ""}}}
        for _ in range(20):
            await merge_patch(api, WAREHOUSE, MICRO_WAREHOUSE, body, namespace=MICRO_NAMESPACE)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(n):
            body["metadata"]["annotations"]["bench/micro"] = str(i)
            await merge_patch(api, WAREHOUSE, MICRO_WAREHOUSE, body, namespace=MICRO_NAMESPACE)
        return ((time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e3)
    finally:
        await api.close()


async def run(ctx: Context, section: Section) -> None:
    for name, us in steps():  # nothing else runs meanwhile: the loop may block
        section.add(name, us, "us")
    section.add("Kafka send + ack (aiokafka, acks=all)", await kafka_send(ctx), "us",
                note="CPU of this process per message; the broker's is extra")
    await create_projects(ctx.api, [MICRO_NAMESPACE])
    await create_warehouses(ctx.api, [Target(MICRO_NAMESPACE, MICRO_WAREHOUSE, "micro", "")])
    ours_cpu, ours_ms = await patch_cost(ctx, stock=False)
    stock_cpu, stock_ms = await patch_cost(ctx, stock=True)
    section.add("refresher: one PATCH, CPU (pushrelay's API client)", ours_cpu, "us",
                baseline=stock_cpu, ratio=ratio(ours_cpu, stock_cpu),
                note="baseline: kubernetes_asyncio's stock session, aiohttp trust_env on")
    section.add("refresher: one PATCH, wall time, sequential", ours_ms, "ms",
                baseline=stock_ms, ratio=ratio(ours_ms, stock_ms))
