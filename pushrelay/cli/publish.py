"""``pushrelay publish``: a synthetic push event, as any other producer would send."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pushrelay.core.events import PushEvent, Scope, encode
from pushrelay.core.normalize import repo_urls
from pushrelay.infra.bus import opened_bus
from pushrelay.infra.settings import CommonSettings, load_settings


async def publish(settings: CommonSettings, repo: str, tags: list[str], project: str | None,
                  source: str) -> PushEvent:
    event = PushEvent(
        source=source, scope=Scope(project=project), repository=repo,
        repo_urls=repo_urls(repo), tags=tags,
    )
    async with opened_bus(settings) as bus:
        await bus.ensure_topics()
        producer = bus.producer(client_id="pushrelay-cli")
        await producer.start()
        try:
            await (await producer.send(settings.push_topic, encode(event), key=event.key))
        finally:
            await producer.stop()
    return event


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(CommonSettings)
    try:
        event = asyncio.run(publish(settings, args.repo, args.tag, args.project, args.source))
    except Exception as exc:  # noqa: BLE001 - reported to the user, exit non-zero
        print(f"error: could not publish to the {settings.bus} bus: {exc}", file=sys.stderr)
        return 1
    scope = f"project {event.scope.project}" if event.scope.project else "all namespaces"
    print(f"published push event {event.id} to {settings.push_topic} "
          f"(key {event.key.decode()}, {scope}, tags {', '.join(event.tags)})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("publish", help="publish a synthetic push event to the bus")
    parser.add_argument("--repo", required=True, help="repository, e.g. quay.io/ns/repo")
    parser.add_argument("--tag", action="append", required=True,
                        help="pushed tag (repeat for several)")
    parser.add_argument("--project", help="only refresh Warehouses in this project namespace")
    parser.add_argument("--source", default="pushrelay-cli", help="producer name")
    parser.set_defaults(func=_run)
