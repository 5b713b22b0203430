"""``pushrelay ingress|router|refresher|all-in-one``: run the services.

This is the composition root: the only place that imports the three services
(they never import each other). Each service package exposes
``create(settings, health_services=None, *, bus)`` in its ``service`` module;
the runtime (:func:`pushrelay.infra.runtime.run_services`) opens the one bus
``PUSHRELAY_BUS`` names and runs what they build on it.
Every service's health endpoints are on ``PUSHRELAY_HEALTH_PORT`` (the ingress
runs that server itself, with its ``/openapi.json``; router and refresher get a
small one from the runtime). ``all-in-one`` runs the three in one event loop
with one settings object and one bus, each stage still going through it, and serves
health for all of them on the ingress's health port.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import ingress.service
import refresher.service
import router.service
from pushrelay.infra.bus.api import Bus
from pushrelay.infra.runtime import Service, ServiceFactory, run_services
from pushrelay.infra.settings import (
    CommonSettings,
    IngressSettings,
    RefresherSettings,
    RouterSettings,
    Settings,
    load_settings,
)

SERVICES = ("ingress", "router", "refresher")
FACTORIES: dict[str, ServiceFactory] = {
    "ingress": ingress.service.create,
    "router": router.service.create,
    "refresher": refresher.service.create,
}
#: What each service validates when it runs alone; several in one process: all of them.
SETTINGS: dict[str, type[CommonSettings]] = {
    "ingress": IngressSettings,
    "router": RouterSettings,
    "refresher": RefresherSettings,
}

__all__ = ["FACTORIES", "SERVICES", "SETTINGS", "create_service", "load_settings", "register",
           "run", "settings_for"]


def create_service(name: str, settings: CommonSettings,
                   health_services: Sequence[Service] | None = None, *, bus: Bus) -> Service:
    return FACTORIES[name](settings, health_services, bus=bus)


def settings_for(names: Sequence[str]) -> CommonSettings:
    """The settings a process running ``names`` validates: only those services' sections."""
    return load_settings(SETTINGS[names[0]] if len(names) == 1 else Settings)


def run(names: Sequence[str], settings: CommonSettings | None = None) -> int:
    """Run the services ``names`` in this process: the exit code (2 for one service
    alone on the embedded bus, see :func:`pushrelay.infra.runtime.run_services`)."""
    return run_services([FACTORIES[n] for n in names], settings or settings_for(names))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in SERVICES:
        parser = sub.add_parser(name, help=f"run the {name} service")
        parser.set_defaults(func=lambda args, n=name: run([n]))
    parser = sub.add_parser("all-in-one", help="run ingress, router and refresher in one process")
    parser.set_defaults(func=lambda args: run(SERVICES))
