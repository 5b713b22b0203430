"""The router baseline: a Kafka relay that does no work.

Consumes push-events with the router's consumer settings and batch size
(pushrelay.infra.bus.kafka.new_consumer, ``getmany`` of up to 1,000 records, 250 ms poll),
produces each record unchanged to ``<prefix>passthrough`` with the router's
producer settings (acks=all, idempotent), waits for every ack, then commits the
batch — the router's delivery loop without decoding, routing or encoding. The
ratio router / passthrough is the cost of the routing itself.

``python -m bench.passthrough`` (settings from ``PUSHRELAY_*``; ``/readyz`` on
``PUSHRELAY_HEALTH_PORT`` once it has joined its group).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web

from pushrelay.infra.bus.kafka import new_consumer, new_producer
from pushrelay.infra.runtime import install_event_loop_policy
from pushrelay.infra.settings import RouterSettings

POLL_MS = 250
BATCH_RECORDS = 1000


def output_topic(settings: RouterSettings) -> str:
    return f"{settings.topic_prefix}passthrough"


async def relay(settings: RouterSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer = new_consumer(settings, settings.push_topic, settings.router_group,
                            client_id="bench-passthrough")
    producer = new_producer(settings, client_id="bench-passthrough")
    ready = asyncio.Event()

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({}, status=200 if ready.is_set() else 503)

    app = web.Application()
    app.add_routes([web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.health_host, settings.health_port).start()
    await producer.start()
    await consumer.start()
    ready.set()
    out = output_topic(settings)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH_RECORDS)
            if not batch:
                continue
            futures = [await producer.send(out, r.value, key=r.key)
                       for records in batch.values() for r in records]
            await asyncio.gather(*futures)
            await consumer.commit({tp: records[-1].offset + 1
                                   for tp, records in batch.items() if records})
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await producer.stop()
        await runner.cleanup()


def main() -> None:
    install_event_loop_policy()
    asyncio.run(relay(RouterSettings()))


if __name__ == "__main__":
    main()
