"""The ingress baseline: a bare aiohttp app that answers 202 and does no work.

Same framework, event loop (uvloop) and server options as the ingress (no
access log, same keep-alive), one catch-all POST route that reads the body and
answers a small JSON 202 — what any receiver must do at least. The ratio
ingress / bare is the cost of the real work: lookup, validation, the event,
Kafka's acknowledgement, the log line and the metrics.

``python -m bench.bare --port N``
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from pushrelay.infra.runtime import install_event_loop_policy


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"msg": "accepted", "delivery": "0" * 32}, status=202)


async def readyz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.add_routes([web.get("/readyz", readyz), web.post("/{tail:.*}", accept)])
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=75.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    install_event_loop_policy()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
