"""``pushrelay receivers`` and ``pushrelay deliveries``: what Quay cannot show.

``receivers`` reads ProjectConfigs, the ClusterConfig and their Secrets with the
caller's kubeconfig, computes each receiver's URL exactly as the ingress does
(``PUSHRELAY_BASE_URL``), says why a receiver is not served, and adds the last
delivery seen for it. ``deliveries`` folds the facts every stage wrote to the
deliveries topic into one row per delivery. Both print a table, or JSON with
``-o json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.deliveries import Delivery, fold
from pushrelay.core.receivers import (
    ConfigReceivers,
    parse_receivers,
    receivers_for,
)
from pushrelay.infra.bus import opened_bus
from pushrelay.infra.deliveries import read_deliveries, read_facts
from pushrelay.infra.kube.client import api_client, get_object, list_objects
from pushrelay.infra.kube.errors import Action, KubeError
from pushrelay.infra.kube.fields import items, text
from pushrelay.infra.kube.resources import (
    CLUSTER_CONFIG,
    CLUSTER_CONFIG_NAME,
    PROJECT_CONFIG,
    SECRET,
)
from pushrelay.infra.settings import CommonSettings, IngressSettings, load_settings


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def scope_of(project: str | None) -> str:
    return project if project else "(cluster)"


# ---- receivers ---------------------------------------------------------------

async def _configs(api: ApiClient, namespace: str | None) -> list[dict[str, Any]]:
    listing = await list_objects(api, PROJECT_CONFIG, namespace)
    configs: list[dict[str, Any]] = []
    for item in items(listing, "items"):
        if not isinstance(item, dict):
            continue
        item.setdefault("kind", PROJECT_CONFIG.kind)
        configs.append(item)
    if namespace is None:
        try:
            cluster = await get_object(api, CLUSTER_CONFIG, CLUSTER_CONFIG_NAME)
            cluster.setdefault("kind", CLUSTER_CONFIG.kind)
            configs.append(cluster)
        except KubeError as exc:
            if exc.action is not Action.DROP:
                raise
    return configs


async def _secrets(
    api: ApiClient, configs: list[dict[str, Any]], cluster_ns: str
) -> dict[tuple[str, str], dict[str, Any] | None]:
    wanted: set[tuple[str, str]] = set()
    for config in configs:
        ns = text(config, "metadata", "namespace") or cluster_ns
        wanted |= {(ns, rc.secret_name) for rc in parse_receivers(config)[0]}
    found: dict[tuple[str, str], dict[str, Any] | None] = {}
    for ns, name in sorted(wanted):
        try:
            found[(ns, name)] = await get_object(api, SECRET, name, ns)
        except KubeError as exc:
            if exc.action is not Action.DROP:
                raise
            found[(ns, name)] = None
    return found


async def collect_receivers(settings: IngressSettings, namespace: str | None,
                            ) -> list[dict[str, Any]]:
    async with api_client(settings.kubeconfig) as api:
        configs = await _configs(api, namespace)
        secrets = await _secrets(api, configs, settings.system_resources_namespace)
    declared: list[ConfigReceivers] = [
        receivers_for(c, base_url=settings.base_url,
                      system_resources_namespace=settings.system_resources_namespace,
                      lookup=lambda ns, name: secrets.get((ns, name)))
        for c in configs
    ]
    try:
        async with opened_bus(settings) as bus:
            deliveries = fold(await read_facts(bus, settings, max_wait=5.0))
    except Exception:  # noqa: BLE001 - bus unreachable: receivers are still worth showing
        deliveries = []
    last: dict[tuple[str | None, str | None], Delivery] = {}
    for row in reversed(deliveries):  # oldest first, so the newest wins
        last[(row.project, row.receiver)] = row
    rows: list[dict[str, Any]] = []
    for obj, config in zip(configs, declared, strict=True):
        published = _status_urls(obj)
        for receiver in config.served:
            seen = last.get((receiver.project, receiver.name))
            # The ingress's own status entry knows its public base URL best.
            url = published.get((receiver.name, receiver.path), receiver.url)
            rows.append({
                "scope": scope_of(receiver.project), "name": receiver.name, "served": True,
                "reason": None, "url": url,
                "last_delivery": seen.model_dump(mode="json") if seen else None,
            })
        for unserved in config.unserved:
            rows.append({
                "scope": scope_of(unserved.owner.project), "name": unserved.name,
                "served": False, "reason": unserved.reason, "url": None, "last_delivery": None,
            })
    return rows


def _status_urls(obj: dict[str, Any]) -> dict[tuple[str, str], str]:
    entries = items(obj, "status", "webhookReceivers")
    return {(text(e, "name"), text(e, "path")): text(e, "url")
            for e in entries if text(e, "url")}


def _receivers(args: argparse.Namespace) -> int:
    settings = load_settings(IngressSettings)
    try:
        rows = asyncio.run(collect_receivers(settings, args.namespace))
    except KubeError as exc:
        print(f"error: cannot read receivers: {exc.reason}", file=sys.stderr)
        return 1
    if args.output == "json":
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not rows:
        print("no Quay.io webhook receivers declared")
        return 0
    out = []
    for row in rows:
        last = row["last_delivery"]
        last_text = "-"
        if last:
            moment = datetime.fromisoformat(last["received_at"]) if last["received_at"] else None
            last_text = f"{when(moment)} {Delivery.model_validate(last).summary()}"
        state = "served" if row["served"] else f"NOT SERVED: {row['reason']}"
        out.append([row["scope"], row["name"], state, row["url"] or "-", last_text])
    print(table(["PROJECT", "RECEIVER", "STATE", "URL", "LAST DELIVERY"], out))
    return 0


# ---- deliveries --------------------------------------------------------------

async def _read_deliveries(settings: CommonSettings, args: argparse.Namespace,
                           ) -> list[Delivery]:
    async with opened_bus(settings) as bus:
        return await read_deliveries(bus, settings, receiver=args.receiver,
                                     namespace=args.namespace, limit=args.limit)


def _deliveries(args: argparse.Namespace) -> int:
    settings = load_settings(CommonSettings)
    try:
        rows = asyncio.run(_read_deliveries(settings, args))
    except Exception as exc:  # noqa: BLE001 - reported to the user
        print(f"error: cannot read deliveries from the {settings.bus} bus: {exc}",
              file=sys.stderr)
        return 1
    if args.output == "json":
        doc = [r.model_dump(mode="json") | {"summary": r.summary()} for r in rows]
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not rows:
        print("no deliveries recorded")
        return 0
    out = [
        [when(r.received_at), scope_of(r.project), r.receiver or "-",
         r.repository or "-", ",".join(r.tags) or "-",
         r.summary() + (" (test notification)" if r.test_notification else ""), r.delivery]
        for r in rows
    ]
    print(table(["TIME", "PROJECT", "RECEIVER", "REPOSITORY", "TAGS", "OUTCOME", "DELIVERY"],
                out))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("receivers", help="webhook receivers, URLs, state, last delivery")
    parser.add_argument("-n", "--namespace", help="only this project namespace")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.set_defaults(func=_receivers)

    parser = sub.add_parser("deliveries", help="recent webhook deliveries and their outcomes")
    parser.add_argument("receiver", nargs="?", help="only this receiver (by name)")
    parser.add_argument("-n", "--namespace", help="only this project namespace")
    parser.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.set_defaults(func=_deliveries)
