"""Running services: start, health endpoints, signals, graceful stop.

A service is anything with ``name``, ``start()``, ``stop(deadline)``
(idempotent), ``readiness()`` (``None`` when ready, else why not),
``degraded()`` (``None``, or how a ready service is degraded) and a
``crashed`` event it sets when one of its background tasks died; all of ours
derive from :class:`pushrelay.infra.lifecycle.ServiceBase`. :func:`serve`
starts services in order, serves ``/healthz``, ``/readyz`` and ``/metrics``,
waits for SIGTERM / SIGINT (or a crash), then stops them within one budget.

The health endpoints are for the cluster (probes, Prometheus), never for the
public: :class:`HealthServer` serves them on ``PUSHRELAY_HEALTH_PORT``. A public
port (the ingress's) serves :func:`liveness_route` at most.
:func:`run_services` is the process entry point (``python -m <service>``,
``pushrelay <service>``, ``pushrelay all-in-one``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pushrelay.infra import logs
from pushrelay.infra.bus import open_bus
from pushrelay.infra.bus.api import Bus, BusError
from pushrelay.infra.kube.errors import KubeConfigError, KubeError
from pushrelay.infra.lifecycle import Deadline
from pushrelay.infra.metrics import REGISTRY
from pushrelay.infra.settings import CommonSettings

log = logging.getLogger(__name__)


class Service(Protocol):
    """What the runtime runs (implemented by :class:`pushrelay.infra.lifecycle.ServiceBase`)."""

    name: str
    crashed: asyncio.Event

    async def start(self) -> None: ...
    async def stop(self, deadline: Deadline | None = None) -> None: ...
    def readiness(self) -> str | None: ...
    def degraded(self) -> str | None:
        """Ready, but degraded (why), or None: ``/readyz`` stays 200 and says so."""
        ...


class ServiceFactory(Protocol):
    """Builds one service from its settings, on the process's ``bus``;
    ``health_services`` is the list whose health a service serving the endpoints
    itself (the ingress) reports."""

    def __call__(self, settings: Any, health_services: Sequence[Service] | None = None,
                 /, *, bus: Bus) -> Service: ...


def liveness_route(services: Sequence[Service]) -> web.RouteDef:
    """``GET /healthz``: 200 unless one of ``services`` crashed (nothing else revealed)."""
    async def healthz(_: web.Request) -> web.Response:
        broken = [s.name for s in services if s.crashed.is_set()]
        if broken:
            return web.json_response({"status": "crashed", "services": broken}, status=500)
        return web.json_response({"status": "ok"})

    return web.get("/healthz", healthz)


def health_routes(services: Sequence[Service]) -> list[web.RouteDef]:
    """``/healthz``, ``/readyz`` (reasons per service; 200 with a ``degraded`` note
    per service that runs degraded, e.g. the ingress while it spools) and ``/metrics``."""
    async def readyz(_: web.Request) -> web.Response:
        reasons = {s.name: r for s in services if (r := s.readiness()) is not None}
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        degraded = {s.name: d for s in services if (d := s.degraded()) is not None}
        if degraded:
            return web.json_response({"status": "ready", "degraded": degraded})
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
    bus: Bus | None = None,
) -> int:
    """Run ``services`` until a signal, ``stop``, or a crash; return the exit code.

    ``bus`` (the one the services were built on) is started before them and
    stopped after all of them, within the same shutdown budget. Services start
    in order; a stop request while one is starting cancels that start (the
    service cleans up after itself). A service that fails to start
    ends the run with exit code 1, as a crash does. The shutdown budget
    (``shutdown_timeout``) runs from the stop request: every started service is
    stopped concurrently with the same :class:`Deadline` (they share nothing but
    the bus), and a service still stopping when it expires is abandoned (exit 1).
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    started: list[Service] = []
    code = 0
    deadline: Deadline | None = None
    try:
        if bus is not None:
            await bus.start()
        for service in services:
            if not await _start(service, stop):
                break
            started.append(service)
        else:
            if health is not None:
                await health.start()
            log.info("services running", extra={"services": [s.name for s in services]})
            await _until_stop_or_crash(services, stop)
        crashed = [s.name for s in services if s.crashed.is_set()]
        if crashed:
            log.error("service crashed; shutting down", extra={"services": crashed})
            code = 1
        else:
            log.info("shutting down")
    except Exception as exc:
        # An unreachable dependency is reported in one line; anything else is a bug.
        log.error("service failed to start; shutting down", exc_info=not _unavailable(exc),
                  extra={"error": f"{type(exc).__name__}: {exc}"[:500]})
        code = 1
    finally:
        deadline = Deadline(shutdown_timeout)
        if health is not None:
            await health.stop()
        if not await _stop_all(started, deadline):
            code = code or 1
        if bus is not None and not await _stop_bus(bus, deadline):
            code = code or 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
    return code


def _unavailable(exc: BaseException) -> bool:
    """A dependency could not be reached (or refused us), or the kubeconfig is
    unusable: not a bug of ours, so one log line without a traceback."""
    return isinstance(exc, BusError | KubeError | KubeConfigError | OSError | TimeoutError)


async def _stop_bus(bus: Bus, deadline: Deadline) -> bool:
    """Stop the bus with what is left of ``deadline``; False if it did not make it."""
    return await _stop_within(f"the {bus.kind} bus", bus.stop(), deadline)


async def _stop_within(what: str, stopping: Awaitable[None], deadline: Deadline) -> bool:
    """Await ``stopping`` within what is left of ``deadline``; False (logged) if it
    did not finish in time or failed."""
    try:
        async with asyncio.timeout(deadline.remaining()):
            await stopping
    except TimeoutError:
        log.error("%s did not stop in time", what)
        return False
    except Exception:
        log.exception("%s failed to stop cleanly", what)
        return False
    return True


async def _start(service: Service, stop: asyncio.Event) -> bool:
    """Start ``service`` unless a stop comes first; False when it did."""
    starting = asyncio.create_task(service.start(), name=f"{service.name}:start")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            log.info("stop requested while starting", extra={"service": service.name})
        await asyncio.gather(starting, return_exceptions=True)
    if starting.cancelled():
        return False
    starting.result()  # a failed start raises here
    return True


async def _until_stop_or_crash(services: Sequence[Service], stop: asyncio.Event) -> None:
    waiters = [asyncio.create_task(stop.wait())]
    waiters += [asyncio.create_task(s.crashed.wait()) for s in services]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def _stop_all(services: Sequence[Service], deadline: Deadline) -> bool:
    """Stop ``services`` concurrently within ``deadline``; False if one did not make it."""
    results = await asyncio.gather(*(
        _stop_within(f"service {s.name}", s.stop(deadline), deadline) for s in services))
    return all(results)


#: Why one service cannot run alone on the embedded bus (docs/bus.md, "Decisions").
EMBEDDED_ALONE = ("error: the embedded bus runs only in all-in-one (PUSHRELAY_BUS=embedded "
                  "keeps the log and its wake-ups in one process): run `pushrelay all-in-one`, "
                  "or set PUSHRELAY_BUS=kafka to run a service on its own")


#: The cyclic collector's thresholds while a service process runs (CPython's are
#: (700, 10, 10)). Each push allocates a few hundred tracked objects that
#: die by reference counting, yet at 700 a young collection ran every ~25 pushes
#: and walked the live young objects (in-flight requests, producer batches)
#: every time. Measured in the ingress at 300 pushes/s (gc.callbacks CPU time, 2 x 12 s plus
#: warm-up, same run): 0.74 s of collector CPU with the defaults (374 young, 34
#: middle, 3 full collections) against 0.16 s at 10,000 (11, 1, 0): ~57 us less
#: per push. Garbage in reference cycles lives a little longer; nothing else.
GC_THRESHOLDS = (10_000, 10, 10)
_DEFAULT_GC_THRESHOLDS = (700, 10, 10)


def run_services(factories: Sequence[ServiceFactory], settings: CommonSettings) -> int:
    """Run the services ``factories`` build in this process, until SIGTERM: the exit code.

    When one of them serves the health endpoints itself (the ingress runs the
    health server, with its ``/openapi.json``), it serves them for all;
    otherwise a :class:`HealthServer` listens on ``PUSHRELAY_HEALTH_PORT``.
    One service alone on the embedded bus is refused (exit 2, a line on stderr):
    its peers could never read what it writes.
    """
    if settings.bus == "embedded" and len(factories) == 1:
        print(EMBEDDED_ALONE, file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    log_deprecations(settings)
    install_event_loop_policy()
    tune_gc()
    return asyncio.run(_run_services(factories, settings))


def log_deprecations(settings: CommonSettings) -> None:
    """A warning per deprecated setting in use (call once logging is configured)."""
    for line in settings.deprecations():
        log.warning(line)


async def _run_services(factories: Sequence[ServiceFactory], settings: CommonSettings) -> int:
    bus = open_bus(settings)  # one per process, shared by every service in it
    reported: list[Service] = []
    services = [factory(settings, reported, bus=bus) for factory in factories]
    reported.extend(services)
    serves_health = any(getattr(s, "serves_health", False) for s in services)
    health = None if serves_health else HealthServer(
        services, settings.health_host, settings.health_port)
    return await serve(services, health=health, shutdown_timeout=settings.shutdown_timeout,
                       bus=bus)


def tune_gc() -> None:
    """Raise the collector's thresholds to :data:`GC_THRESHOLDS` for the process,
    unless someone (an embedding application, ``PYTHON*`` tuning) already changed them."""
    if gc.get_threshold() == _DEFAULT_GC_THRESHOLDS:
        gc.set_threshold(*GC_THRESHOLDS)


def install_event_loop_policy() -> None:
    """Use uvloop when it is installed: faster sockets and timers."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
