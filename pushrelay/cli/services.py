"""``pushrelay ingress|router|refresher|all-in-one``: run the services.

Each service package exposes ``create(settings, health_services=None)`` in its
``service`` module, returning an object that follows
:class:`pushrelay.runtime.Service`. Every service's health endpoints are on
``PUSHRELAY_HEALTH_PORT`` (the ingress runs that server itself, with its
``/openapi.json``; router and refresher get a small one). ``all-in-one`` runs
the three in one event loop with one settings object, each stage still going
through Kafka, and serves health for all of them on the ingress's health port.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from pushrelay import logs
from pushrelay.runtime import HealthServer, Service, install_event_loop_policy, serve
from pushrelay.settings import Settings

SERVICES = ("ingress", "router", "refresher")

log = logging.getLogger(__name__)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"  PUSHRELAY_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                 for e in exc.errors()]
        raise SystemExit("invalid settings:\n" + "\n".join(lines)) from None


def log_deprecations(settings: Settings) -> None:
    """A warning per deprecated setting in use (call once logging is configured)."""
    for line in settings.deprecations():
        log.warning(line)


def create_service(name: str, settings: Settings,
                   health_services: Sequence[Service] | None = None) -> Service:
    module = importlib.import_module(f"{name}.service")
    service: Service = module.create(settings, health_services=health_services)
    return service


async def run_services(names: Sequence[str], settings: Settings) -> int:
    services: list[Service] = []
    if "ingress" in names:
        # The ingress's health server serves /readyz etc. for every service in the process.
        ingress_health: list[Service] = []
        services.append(create_service("ingress", settings, health_services=ingress_health))
        services += [create_service(n, settings) for n in names if n != "ingress"]
        ingress_health.extend(services)
        health = None
    else:
        services = [create_service(n, settings) for n in names]
        health = HealthServer(services, settings.health_host, settings.health_port)
    return await serve(services, health=health, shutdown_timeout=settings.shutdown_timeout)


def run(names: Sequence[str], settings: Settings | None = None) -> int:
    settings = settings or load_settings()
    logs.configure(settings.log_level, settings.log_format)
    log_deprecations(settings)
    install_event_loop_policy()
    return asyncio.run(run_services(names, settings))


def main_for(name: str) -> None:
    """``python -m <service>``."""
    sys.exit(run([name]))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in SERVICES:
        parser = sub.add_parser(name, help=f"run the {name} service")
        parser.set_defaults(func=lambda args, n=name: run([n]))
    parser = sub.add_parser("all-in-one", help="run ingress, router and refresher in one process")
    parser.set_defaults(func=lambda args: run(SERVICES))
