"""``pushrelay demo``: the whole product on this machine, explained as it runs.

Brings up the devstack (building what it needs the first time), runs the three
services in one process, creates a sample project (namespace, Secret,
ProjectConfig with a Quay receiver, Warehouse), prints the receiver URL and a
ready-to-paste ``curl``, sends one Quay push, and shows the Warehouse's refresh
annotation changing and the delivery's outcome. ``--once`` stops after that;
otherwise it keeps serving until Ctrl-C, then removes the sample and stops what
it started.

``--embedded`` runs the same demo on the embedded bus (``PUSHRELAY_BUS=embedded``,
docs/bus.md): the three services' events go through a SQLite log in
``<devstack state>/demo/embedded`` instead of Kafka. The devstack still brings
its Kafka up (the shared stack is one unit); the demo never connects to it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import secrets
import shlex
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio.client import ApiClient

from pushrelay.cli.services import SERVICES, create_service
from pushrelay.infra import logs
from pushrelay.infra.bus import opened_bus
from pushrelay.infra.bus.api import Bus
from pushrelay.infra.deliveries import read_deliveries
from pushrelay.infra.kube.client import api_client, get_object, request_json
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.fields import items, text
from pushrelay.infra.kube.informer import Informer
from pushrelay.infra.kube.resources import PROJECT_CONFIG, REFRESH_ANNOTATION, SECRET, WAREHOUSE
from pushrelay.infra.runtime import install_event_loop_policy, log_deprecations
from pushrelay.infra.settings import Settings

PROJECT = "pushrelay-demo"
RECEIVER = "quay"
SECRET_NAME = "quay-webhook"
WAREHOUSE_NAME = "demo-app"
REPOSITORY = "quay.io/pushrelay-demo/app"
TAG = "v1.2.0"


def say(text: str = "") -> None:
    print(text, flush=True)


def free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def sample_objects(secret: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": PROJECT}}),
        (SECRET.path(PROJECT), {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET_NAME},
            "data": {"secret": base64.b64encode(secret.encode()).decode()}}),
        (PROJECT_CONFIG.path(PROJECT), {
            "apiVersion": PROJECT_CONFIG.api_version, "kind": "ProjectConfig",
            "metadata": {"name": PROJECT},
            "spec": {"webhookReceivers": [
                {"name": RECEIVER, "quay": {"secretRef": {"name": SECRET_NAME}}}]}}),
        (WAREHOUSE.path(PROJECT), {
            "apiVersion": WAREHOUSE.api_version, "kind": "Warehouse",
            "metadata": {"name": WAREHOUSE_NAME},
            "spec": {"subscriptions": [
                {"image": {"repoURL": REPOSITORY, "constraint": "^1.0.0"}}]}}),
    ]


async def create_sample(api: ApiClient) -> None:
    for path, body in sample_objects(secrets.token_hex(24)):
        try:
            await request_json(api, "POST", path, body=body)
        except KubeError as exc:
            if exc.status != 409:
                raise


async def delete_sample(api: ApiClient) -> None:
    with contextlib.suppress(KubeError):
        await request_json(api, "DELETE", f"/api/v1/namespaces/{PROJECT}")


async def wait_for_url(api: ApiClient, base_url: str, within: float = 30.0) -> str:
    """The receiver's URL on this demo's ingress: ``base_url`` + the path in the
    ProjectConfig's status. (The status's ``url`` may be another writer's: any
    ingress on a shared devstack with status writing on fills it in with its own
    base URL, and pushrelay never fights another writer.)"""
    async with asyncio.timeout(within):
        while True:
            config = await get_object(api, PROJECT_CONFIG, PROJECT, PROJECT)
            for receiver in items(config, "status", "webhookReceivers"):
                if text(receiver, "name") == RECEIVER and text(receiver, "path"):
                    return base_url.rstrip("/") + text(receiver, "path")
            await asyncio.sleep(0.2)


async def refresh_value(api: ApiClient) -> str | None:
    warehouse = await get_object(api, WAREHOUSE, WAREHOUSE_NAME, PROJECT)
    return text(warehouse, "metadata", "annotations", REFRESH_ANNOTATION) or None


async def watch_refresh(api: ApiClient, before: str | None, within: float = 30.0) -> str:
    """Wait, on a watch, for the Warehouse's refresh annotation to change."""
    changed = asyncio.Event()
    seen: list[str] = []

    def on_change(_: str, obj: dict[str, Any]) -> None:
        value = text(obj, "metadata", "annotations", REFRESH_ANNOTATION)
        if text(obj, "metadata", "name") == WAREHOUSE_NAME and value and value != before:
            seen.append(value)
            changed.set()

    informer = Informer(api, WAREHOUSE, on_change, namespace=PROJECT)
    await informer.start()
    try:
        async with asyncio.timeout(within):
            await changed.wait()
    finally:
        await informer.stop()
    return seen[-1]


async def demo(settings: Settings, once: bool) -> int:
    """The three services on one bus (the settings'), started for the demo."""
    async with opened_bus(settings) as bus:
        return await _demo(settings, once, bus)


async def _demo(settings: Settings, once: bool, bus: Bus) -> int:
    services = []
    health: list[Any] = []
    services.append(create_service("ingress", settings, health_services=health, bus=bus))
    services += [create_service(name, settings, bus=bus) for name in SERVICES[1:]]
    health.extend(services)
    async with api_client(settings.kubeconfig) as api:
        say(f"• creating the sample project {PROJECT!r}: Secret, ProjectConfig "
            f"(receiver {RECEIVER!r}), Warehouse {WAREHOUSE_NAME!r} "
            f"subscribed to {REPOSITORY} with constraint ^1.0.0")
        await delete_sample_if_stale(api)
        await create_sample(api)
        say(f"• starting ingress, router and refresher in one process "
            f"(ingress on {settings.ingress_host}:{settings.ingress_port})")
        started = []
        try:
            for service in services:
                await service.start()
                started.append(service)
            url = await wait_for_url(api, settings.base_url)
            payload = {
                "name": "app", "repository": "pushrelay-demo/app",
                "namespace": "pushrelay-demo", "docker_url": REPOSITORY,
                "homepage": "https://quay.io/repository/pushrelay-demo/app",
                "updated_tags": [TAG],
            }
            body = orjson.dumps(payload).decode()
            say(f"• the receiver is served at\n    {url}\n  (also in the ProjectConfig's "
                "status.webhookReceivers). Paste this to push yourself:")
            say(f"    curl -i -X POST -H 'Content-Type: application/json' \\\n"
                f"      -d {shlex.quote(body)} \\\n      {url}")
            before = await refresh_value(api)
            say(f"• Warehouse {PROJECT}/{WAREHOUSE_NAME} refresh annotation before: {before}")
            say(f"• sending a Quay push of {REPOSITORY}:{TAG} …")
            started_at = time.monotonic()
            async with aiohttp.ClientSession() as http, http.post(url, data=body) as resp:
                answer = await resp.text()
            say(f"  ingress answered {resp.status} {answer}")
            if resp.status != 202:
                return 1
            delivery = orjson.loads(answer).get("delivery")
            after = await watch_refresh(api, before)
            elapsed = time.monotonic() - started_at
            say(f"• refresh annotation after:  {after}  ({elapsed * 1000:.0f} ms after the push)")
            await show_delivery(bus, settings, delivery)
            if once:
                return 0
            say("• pushrelay keeps running: push again with the curl above, try "
                "`pushrelay deliveries` or `pushrelay explain` in another shell. Ctrl-C to stop.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            return 0
        finally:
            for service in reversed(started):
                await service.stop()
            say("• removing the sample project")
            await delete_sample(api)


async def delete_sample_if_stale(api: ApiClient) -> None:
    try:
        await request_json(api, "GET", f"/api/v1/namespaces/{PROJECT}")
    except KubeError:
        return
    await delete_sample(api)
    async with asyncio.timeout(60):
        while True:
            try:
                await request_json(api, "GET", f"/api/v1/namespaces/{PROJECT}")
            except KubeError:
                return
            await asyncio.sleep(0.3)


async def show_delivery(bus: Bus, settings: Settings, delivery: str | None) -> None:
    async with asyncio.timeout(15):
        while True:
            rows = [r for r in await read_deliveries(bus, settings, limit=50)
                    if r.delivery == delivery]
            if rows and rows[0].refreshed:
                break
            await asyncio.sleep(0.3)
    row = rows[0]
    say(f"• delivery {delivery}: {row.summary()} "
        f"(matched {', '.join(row.matched)}; see `pushrelay deliveries`)")


def embedded_data_dir(state_dir: Path) -> Path:
    """Where ``demo --embedded`` keeps its log: under the devstack's state directory."""
    return state_dir / "demo" / "embedded"


def demo_settings(env: Mapping[str, str], port: int, *, embedded: bool,
                  data_dir: Path) -> Settings:
    """The demo's settings: the devstack's API server (``env`` is what ``Devstack.up``
    returns), the ingress on ``port`` of 127.0.0.1; with ``embedded`` the embedded bus
    in ``data_dir`` and no Kafka setting at all, else the devstack's Kafka."""
    bus: dict[str, Any] = (
        {"bus": "embedded", "data_dir": str(data_dir)} if embedded
        else {"bus": "kafka", "kafka_bootstrap": env["PUSHRELAY_KAFKA_BOOTSTRAP"]})
    return Settings(
        **bus, kubeconfig=env["KUBECONFIG"],
        ingress_host="127.0.0.1", ingress_port=port, base_url=f"http://127.0.0.1:{port}",
        write_status=True, log_level="WARNING", log_format="text",
        refresh_min_interval=1.0,
    )


def _run(args: argparse.Namespace) -> int:
    from pushrelay_devstack.stack import Devstack

    say("• bringing up the devstack: etcd + kube-apiserver + Kafka on 127.0.0.1 "
        "(the first run builds them; later runs take seconds)")
    stack = Devstack()
    was_up = stack.healthy()
    env = stack.up()
    say(f"  devstack ready: KUBECONFIG={env['KUBECONFIG']} "
        f"PUSHRELAY_KAFKA_BOOTSTRAP={env['PUSHRELAY_KAFKA_BOOTSTRAP']}")
    port = free_port(args.port)
    data_dir = embedded_data_dir(stack.paths.root)
    settings = demo_settings(env, port, embedded=args.embedded, data_dir=data_dir)
    if args.embedded:
        data_dir.mkdir(parents=True, exist_ok=True)
        say(f"• embedded bus: the events go through a SQLite log in {data_dir}, "
            "not through Kafka (the devstack's Kafka stays unused)")
    logs.configure(settings.log_level, settings.log_format)
    log_deprecations(settings)
    install_event_loop_policy()
    try:
        return asyncio.run(demo(settings, args.once))
    except KeyboardInterrupt:
        return 0
    finally:
        if not was_up and not args.keep_devstack:
            say("• stopping the devstack it started (use --keep-devstack to keep it)")
            stack.down()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run the whole pipeline locally with a sample push")
    parser.add_argument("--once", action="store_true", help="exit after the sample push")
    parser.add_argument("--port", type=int, default=8080, help="ingress port (if free)")
    parser.add_argument("--keep-devstack", action="store_true",
                        help="leave the devstack running afterwards")
    parser.add_argument("--embedded", action="store_true",
                        help="all-in-one on the embedded bus (PUSHRELAY_BUS=embedded, a log "
                             "under the devstack's state directory) instead of Kafka")
    parser.set_defaults(func=_run)
