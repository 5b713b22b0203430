"""``pushrelay explain REPO TAG... [--project P] [-o table|json]``.

Answers "what would the router do with this push?" without sending anything:
one LIST of Warehouses (all namespaces, via ``KUBECONFIG`` or the pod's
service account) builds the same :class:`~pushrelay.matching.WarehouseIndex`
the router keeps, and :func:`~pushrelay.matching.explain` gives the router's
decision plus, for every subscription on the repository that would not
refresh, the reason (constraint not satisfied, regex excluded, strict semver
rejected, wrong namespace, deprecated field, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict
from typing import Any, TextIO

import orjson

from pushrelay.kube.client import api_client, list_objects
from pushrelay.kube.errors import KubeError
from pushrelay.kube.resources import WAREHOUSE
from pushrelay.matching import Compiler, Explanation, WarehouseIndex, event_urls, explain
from pushrelay.normalize import repo_urls


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explain", help="which Warehouses a push would refresh, and why others would not",
        description="Which Warehouses a push of TAG to REPO would refresh, and for each "
        "subscription on REPO that would not, why. Reads Warehouses with one LIST call.",
    )
    parser.add_argument("repo", metavar="REPO", help="pushed repository, e.g. quay.io/ns/repo")
    parser.add_argument("tags", metavar="TAG", nargs="+", help="pushed tag(s)")
    parser.add_argument("--project", "-p", default=None,
                        help="project (namespace) of the receiver; default: all namespaces")
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default $KUBECONFIG)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(run(args.repo, args.tags, args.project, args.kubeconfig))
    except KubeError as exc:
        print(f"error: cannot list Warehouses: {exc.reason}", file=sys.stderr)
        return 1
    if args.output == "json":
        sys.stdout.write(orjson.dumps(as_json(result), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        render(result, sys.stdout)
    return 0


async def run(repo: str, tags: list[str], project: str | None,
              kubeconfig: str | None = None) -> Explanation:
    async with api_client(kubeconfig) as api:
        listing = await list_objects(api, WAREHOUSE)
    return explain_objects(listing.get("items") or [], repo, tags, project)


def explain_objects(items: list[dict[str, Any]], repo: str, tags: list[str],
                    project: str | None, compiler: Compiler | None = None) -> Explanation:
    index = WarehouseIndex(compiler)
    for item in items:
        index.upsert(item)
    return explain(index, event_urls(repo_urls(repo), repo), tags, project)


def as_json(result: Explanation) -> dict[str, Any]:
    return {
        "repo_urls": list(result.urls),
        "tags": list(result.tags),
        "project": result.project,
        "refresh": [asdict(m) for m in result.matches],
        "not_refreshed": [asdict(r) for r in result.subscriptions if r.outcome != "refresh"],
        "subscriptions": [asdict(r) for r in result.subscriptions],
    }


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)] + [row[-1]]
        out.write("  ".join(cells).rstrip() + "\n")


def render(result: Explanation, out: TextIO) -> None:
    scope = f"project {result.project}" if result.project is not None else "all namespaces"
    out.write(f"push of {', '.join(result.tags)} to {result.urls[0] if result.urls else '?'}"
              f" (scope: {scope})\n\n")
    if result.matches:
        out.write(f"WOULD REFRESH {len(result.matches)} Warehouse(s):\n")
        _table([["NAMESPACE", "WAREHOUSE", "SUBSCRIPTIONS", "QUALIFYING TAGS"]] + [
            [m.namespace, m.name, ",".join(f"#{p}" for p in m.positions), ", ".join(m.tags)]
            for m in result.matches], out)
    else:
        out.write("WOULD REFRESH no Warehouse.\n")
    refreshed = {(m.namespace, m.name) for m in result.matches}
    misses = [r for r in result.subscriptions if r.outcome != "refresh"]
    if not result.subscriptions:
        out.write(f"\nno Warehouse subscribes to {', '.join(result.urls)}\n")
    if misses:
        out.write(f"\nWOULD NOT REFRESH ({len(misses)} subscription(s) on this repository):\n")
        rows = [["NAMESPACE", "WAREHOUSE", "SUB", "KIND", "OUTCOME", "WHY"]]
        for r in misses:
            why = [r.detail] if r.detail else []
            why += [f"{tag}: {reason}" for tag, reason in r.rejected.items()]
            if (r.namespace, r.warehouse) in refreshed:
                why.append("(the Warehouse is refreshed by another subscription)")
            rows.append([r.namespace, r.warehouse, f"#{r.position}", r.kind, r.outcome,
                         "; ".join(why)])
        _table(rows, out)
