"""The ingress's second baseline: the least an acknowledged push can cost on this stack.

A minimal aiohttp + aiokafka app (issue 16, goal 4): one catch-all POST route
parses the JSON body (orjson), checks it is an object with a string
``docker_url``, produces it to ``<prefix>push-events`` with ``acks=all`` and
an idempotent producer (no linger: like the ingress, each request waits for
its own ack), awaits the ack and answers 202. No receivers, no event model, no
delivery record, no log line, no metrics: what is left is the framework, the
Kafka client and the broker's acknowledged write. The ingress / minimal ratio
(throughput, CPU per push) is the price of everything else.

``python -m bench.minimal`` reads ``PUSHRELAY_INGRESS_PORT``,
``PUSHRELAY_HEALTH_PORT``, ``PUSHRELAY_KAFKA_BOOTSTRAP`` and
``PUSHRELAY_TOPIC_PREFIX``, as the ingress does (so the bench starts it the
same way), and serves ``/readyz`` on the health port once the producer is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from pushrelay.infra.runtime import install_event_loop_policy

ACCEPTED = orjson.dumps({"msg": "accepted", "delivery": "0" * 32})
INVALID = orjson.dumps({"error": "invalid request body"})


def app(producer: AIOKafkaProducer, topic: str) -> web.Application:
    async def accept(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            push = orjson.loads(body)
        except orjson.JSONDecodeError:
            push = None
        if not isinstance(push, dict) or not isinstance(push.get("docker_url"), str):
            return web.Response(status=400, body=INVALID, content_type="application/json")
        future = await producer.send(topic, body, key=push["docker_url"].encode())
        await future
        return web.Response(status=202, body=ACCEPTED, content_type="application/json")

    application = web.Application()
    application.add_routes([web.post("/{tail:.*}", accept)])
    return application


async def serve() -> None:
    env = os.environ
    producer = AIOKafkaProducer(
        bootstrap_servers=env.get("PUSHRELAY_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        acks="all", enable_idempotence=True, linger_ms=0, client_id="bench-minimal")
    await producer.start()
    public = web.AppRunner(app(producer, f"{env.get('PUSHRELAY_TOPIC_PREFIX', '')}push-events"),
                           access_log=None, keepalive_timeout=75.0)
    health = web.Application()

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    health.add_routes([web.get("/readyz", readyz)])
    admin = web.AppRunner(health, access_log=None)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await public.setup()
        await web.TCPSite(public, "127.0.0.1", int(env["PUSHRELAY_INGRESS_PORT"]),
                          backlog=1024).start()
        await admin.setup()
        await web.TCPSite(admin, "127.0.0.1", int(env["PUSHRELAY_HEALTH_PORT"])).start()
        await stop.wait()
    finally:
        await public.cleanup()
        await admin.cleanup()
        await producer.stop()


def main() -> None:
    install_event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
