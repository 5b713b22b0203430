"""``pushrelay explain REPO [TAG...] [--project P] [-o table|json]``.

Answers "what would the router do with this push?" without sending anything:
one LIST of Warehouses (all namespaces, via ``KUBECONFIG`` or the pod's
service account) builds the same :class:`~pushrelay.core.matching.WarehouseIndex`
the router keeps; :func:`explain` gives the router's decision (the very same
:func:`~pushrelay.core.matching.route`) plus, for every subscription on the
repository that would not refresh, the reason (constraint not satisfied,
regex excluded, strict semver rejected, wrong namespace, deprecated field...).
Without a TAG it explains a push that carries no tags: every subscriber in
scope is refreshed, as Kargo does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TextIO

import orjson

from pushrelay.core.deliveries import NO_TAGS
from pushrelay.core.matching import (
    PUSHABLE_KINDS,
    Compiler,
    Match,
    Subscription,
    WarehouseIndex,
    event_urls,
    push_tags,
    route,
)
from pushrelay.core.normalize import repo_urls
from pushrelay.infra.kube.client import api_client, list_objects
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.fields import items
from pushrelay.infra.kube.resources import WAREHOUSE

Outcome = Literal["refresh", "no-qualifying-tag", "out-of-scope", "invalid", "not-applicable"]


@dataclass(frozen=True, slots=True)
class SubscriptionReport:
    namespace: str
    warehouse: str
    position: int
    kind: str
    repo_url: str
    outcome: Outcome
    qualifying: tuple[str, ...] = ()
    rejected: dict[str, str] = field(default_factory=dict)  # tag → why not
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Explanation:
    urls: tuple[str, ...]
    tags: tuple[str, ...]
    project: str | None
    matches: tuple[Match, ...]
    subscriptions: tuple[SubscriptionReport, ...]


def _report(sub: Subscription, tags: list[str], project: str | None) -> SubscriptionReport:
    base = (sub.namespace, sub.warehouse, sub.position, sub.kind, sub.repo_url)
    if not tags and sub.kind in PUSHABLE_KINDS:  # nothing to filter on: route() refreshes it
        if project is not None and sub.namespace != project:
            return SubscriptionReport(
                *base, "out-of-scope",
                detail=f"wrong namespace: the event is scoped to project {project!r}")
        unchecked = f" (its rules are not checked: {sub.error})" if sub.error else ""
        return SubscriptionReport(*base, "refresh", detail=NO_TAGS + unchecked)
    if sub.error:
        return SubscriptionReport(*base, "invalid", detail=sub.error)
    if sub.kind not in PUSHABLE_KINDS:
        return SubscriptionReport(
            *base, "not-applicable", detail=f"{sub.kind} subscriptions are not refreshed by "
            "a registry push")
    ok: list[str] = []
    rejected: dict[str, str] = {}
    for tag in tags:
        verdict = sub.compiled.qualify(tag)
        if verdict.ok:
            ok.append(tag)
        else:
            rejected[tag] = verdict.reason or "not qualified"
    if project is not None and sub.namespace != project:
        return SubscriptionReport(
            *base, "out-of-scope", tuple(ok), rejected,
            detail=f"wrong namespace: the event is scoped to project {project!r}")
    if not ok:
        return SubscriptionReport(*base, "no-qualifying-tag", (), rejected,
                                  detail="no pushed tag qualifies")
    return SubscriptionReport(*base, "refresh", tuple(ok), rejected)


def explain(index: WarehouseIndex, urls: Iterable[str], tags: Iterable[str],
            project: str | None) -> Explanation:
    """:func:`route`'s answer plus a verdict for every subscription on those URLs,
    in every namespace (so "wrong namespace" can be told apart from "no match")."""
    url_list = list(dict.fromkeys(urls))
    tag_list = push_tags(tags)
    reports: list[SubscriptionReport] = []
    seen: set[tuple[str, str, int]] = set()
    for url in url_list:
        for sub in _all_subscribers(index, url):
            key = (sub.namespace, sub.warehouse, sub.position)
            if key not in seen:
                seen.add(key)
                reports.append(_report(sub, tag_list, project))
    reports.sort(key=lambda r: (r.namespace, r.warehouse, r.position))
    matches = sorted(route(index, url_list, tag_list, project),
                     key=lambda m: (m.namespace, m.name))
    return Explanation(tuple(url_list), tuple(tag_list), project, tuple(matches),
                       tuple(reports))


def _all_subscribers(index: WarehouseIndex, url: str) -> Iterable[Subscription]:
    for bucket in index.subscribers(url).values():
        yield from bucket.values()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explain", help="which Warehouses a push would refresh, and why others would not",
        description="Which Warehouses a push of TAG to REPO would refresh, and for each "
        "subscription on REPO that would not, why. Reads Warehouses with one LIST call.",
    )
    parser.add_argument("repo", metavar="REPO", help="pushed repository, e.g. quay.io/ns/repo")
    parser.add_argument("tags", metavar="TAG", nargs="*",
                        help="pushed tag(s); none (or only '') is a push without tags, "
                        "which refreshes every subscriber in scope")
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
    return explain_objects(items(listing, "items"), repo, tags, project)


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
    what = f"push of {', '.join(result.tags)}" if result.tags else "push with no tags"
    out.write(f"{what} to {result.urls[0] if result.urls else '?'} (scope: {scope})\n\n")
    if result.matches:
        note = f" ({NO_TAGS})" if not result.tags else ""
        out.write(f"WOULD REFRESH {len(result.matches)} Warehouse(s){note}:\n")
        _table([["NAMESPACE", "WAREHOUSE", "SUBSCRIPTIONS", "QUALIFYING TAGS"]] + [
            [m.namespace, m.name, ",".join(f"#{p}" for p in m.positions), ", ".join(m.tags) or "-"]
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
