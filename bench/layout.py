"""The Warehouses the benchmarks share, created once per run.

* e2e set: ``e2e_namespaces`` projects ``bench-e2e-NN`` with
  ``e2e_per_namespace`` Warehouses each (1,000 in all); Warehouse ``w<j>`` is in
  namespace ``j mod 20`` and subscribes to its own repository ``e2e-<j>``.
* index set: ``index_namespaces`` projects ``bench-idx-NN`` with
  ``index_per_namespace`` Warehouses each (9,000); Warehouse ``w<j>``
  subscribes to ``repo-<j mod 1000>``, so a project-scoped push matches exactly
  one Warehouse and a cluster-scoped one matches one per index namespace.

Together: 10,000 Warehouses, every one reachable through its project's receiver.
"""

from __future__ import annotations

import time

from bench.cluster import Target, create_projects, create_warehouses
from bench.common import Context, say

E2E_PREFIX = "bench-e2e-"
INDEX_PREFIX = "bench-idx-"
REPOS = 1000


async def ensure_e2e(ctx: Context) -> list[Target]:
    if "e2e_targets" in ctx.state:
        targets: list[Target] = ctx.state["e2e_targets"]
        return targets
    sizes = ctx.sizes
    started = time.monotonic()
    namespaces = [f"{E2E_PREFIX}{i:02d}" for i in range(sizes.e2e_namespaces)]
    paths = await create_projects(ctx.api, namespaces)
    targets = [Target(namespaces[j % len(namespaces)], f"w{j}", f"e2e-{j}",
                      paths[namespaces[j % len(namespaces)]])
               for j in range(sizes.e2e_warehouses)]
    await create_warehouses(ctx.api, targets)
    ctx.state["e2e_targets"] = targets
    say(f"layout: {len(targets)} e2e Warehouses in {len(namespaces)} projects "
        f"created in {time.monotonic() - started:.1f}s")
    return targets


async def ensure_index(ctx: Context) -> list[Target]:
    """All Warehouses (e2e set + index set); creates what is missing."""
    if "index_targets" in ctx.state:
        everything: list[Target] = ctx.state["index_targets"]
        return everything
    e2e = await ensure_e2e(ctx)
    sizes = ctx.sizes
    started = time.monotonic()
    namespaces = [f"{INDEX_PREFIX}{i:02d}" for i in range(sizes.index_namespaces)]
    paths = await create_projects(ctx.api, namespaces)
    extra = []
    for k, ns in enumerate(namespaces):
        for m in range(sizes.index_per_namespace):
            j = len(e2e) + k * sizes.index_per_namespace + m
            extra.append(Target(ns, f"w{j}", f"repo-{j % REPOS}", paths[ns]))
    await create_warehouses(ctx.api, extra)
    seconds = time.monotonic() - started
    ctx.state["index_targets"] = e2e + extra
    ctx.state["index_create_seconds"] = seconds
    say(f"layout: {len(extra)} more Warehouses in {len(namespaces)} projects created in "
        f"{seconds:.1f}s ({len(e2e) + len(extra)} in all)")
    return e2e + extra
