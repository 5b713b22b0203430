"""The memory baseline: a process that imports a service and does nothing.

``python -m bench.idle ingress`` imports ``ingress.service`` (and so every
library the service loads), installs the same event loop, serves ``/readyz``
on ``PUSHRELAY_HEALTH_PORT`` and sleeps. Its RSS is the floor of that
service's process — interpreter plus code — so service RSS / idle RSS shows
how much the service's data and buffers add.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys

from aiohttp import web

from pushrelay.infra.runtime import install_event_loop_policy


async def serve(port: int) -> None:
    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.add_routes([web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main() -> None:
    importlib.import_module(f"{sys.argv[1]}.service")
    install_event_loop_policy()
    try:
        asyncio.run(serve(int(os.environ["PUSHRELAY_HEALTH_PORT"])))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
