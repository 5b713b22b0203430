"""Running services: start, health endpoints, signals, graceful stop.

A service is anything with ``name``, ``start()``, ``stop()`` (idempotent),
``readiness()`` (``None`` when ready, else why not) and a ``crashed`` event it
sets when one of its background tasks died. :func:`serve` starts services in
order, serves ``/healthz``, ``/readyz`` and ``/metrics``, waits for SIGTERM /
SIGINT (or a crash), then stops them in reverse order within a time budget.

The health endpoints are for the cluster (probes, Prometheus), never for the
public: :class:`HealthServer` serves them on ``PUSHRELAY_HEALTH_PORT``. A public
port (the ingress's) serves :func:`liveness_route` at most.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pushrelay.metrics import REGISTRY

log = logging.getLogger(__name__)


class Service(Protocol):
    name: str
    crashed: asyncio.Event

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def readiness(self) -> str | None: ...


def liveness_route(services: Sequence[Service]) -> web.RouteDef:
    """``GET /healthz``: 200 unless one of ``services`` crashed (nothing else revealed)."""
    async def healthz(_: web.Request) -> web.Response:
        broken = [s.name for s in services if s.crashed.is_set()]
        if broken:
            return web.json_response({"status": "crashed", "services": broken}, status=500)
        return web.json_response({"status": "ok"})

    return web.get("/healthz", healthz)


def health_routes(services: Sequence[Service]) -> list[web.RouteDef]:
    """``/healthz``, ``/readyz`` (reasons per service) and ``/metrics``."""
    async def readyz(_: web.Request) -> web.Response:
        reasons = {s.name: r for s in services if (r := s.readiness()) is not None}
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [liveness_route(services), web.get("/readyz", readyz),
            web.get("/metrics", metrics)]


class HealthServer:
    """The admin HTTP server: :func:`health_routes` of ``services``, plus ``routes``.

    ``port`` 0 binds an ephemeral port; :attr:`port` is the bound one after start.
    """

    def __init__(self, services: Sequence[Service], host: str, port: int,
                 routes: Sequence[web.RouteDef] = ()) -> None:
        self._app = web.Application()
        self._app.add_routes([*health_routes(services), *routes])
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("health endpoints listening", extra={"host": self._host, "port": self.port})

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def serve(
    services: Sequence[Service], *, health: HealthServer | None = None,
    shutdown_timeout: float = 20.0, stop: asyncio.Event | None = None,
) -> int:
    """Run ``services`` until a signal, ``stop``, or a crash. Returns an exit code."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    started: list[Service] = []
    code = 0
    try:
        for service in services:
            await service.start()
            started.append(service)
        if health is not None:
            await health.start()
        waiters = [asyncio.create_task(stop.wait())]
        waiters += [asyncio.create_task(s.crashed.wait()) for s in services]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        crashed = [s.name for s in services if s.crashed.is_set()]
        if crashed:
            log.error("service crashed; shutting down", extra={"services": crashed})
            code = 1
        else:
            log.info("shutting down")
    finally:
        if health is not None:
            await health.stop()
        for service in reversed(started):
            try:
                async with asyncio.timeout(shutdown_timeout):
                    await service.stop()
            except TimeoutError:
                log.error("service did not stop in time", extra={"service": service.name})
                code = code or 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
    return code


def install_event_loop_policy() -> None:
    """Use uvloop when it is installed: faster sockets and timers."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
