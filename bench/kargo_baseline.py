"""The baseline for write amplification and latency: what Kargo's receiver does.

Kargo's Quay receiver (``refreshWarehouses`` in its ``internal/webhook/external``)
handles each request on its own: it lists the Warehouses subscribed to the
pushed repository — through controller-runtime's *cached* client, an informer
with a field index on subscription URLs, so the list costs no API call — keeps
those a pushed tag qualifies for, and refreshes each one in turn with a patch of
the ``kargo.akuity.io/refresh`` annotation, answering 200 when done. Nothing is
coalesced: N pushes to a repository cost N patches of each subscribed Warehouse.

:class:`KargoBaseline` does the same in this process: an informer feeds the
same :class:`~pushrelay.core.matching.WarehouseIndex` pushrelay uses (so both decide
identically which Warehouses a push refreshes), and every request patches every
match sequentially before it is answered. Same URLs, same payloads.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.matching import WarehouseIndex, route
from pushrelay.core.normalize import repo_urls
from pushrelay.infra.kube.client import merge_patch
from pushrelay.infra.kube.informer import ChangeKind, Informer, object_key
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION, WAREHOUSE
from pushrelay_devstack.procs import free_port


def _stamp() -> str:
    ns = time.time_ns()
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


class KargoBaseline:
    def __init__(self, api: ApiClient, paths: dict[str, str],
                 namespace: str | None = None) -> None:
        """``paths``: receiver path → project namespace."""
        self._api = api
        self._paths = paths
        self.index = WarehouseIndex()
        self._informer = Informer(api, WAREHOUSE, self._on_change, namespace=namespace)
        self._runner: web.AppRunner | None = None
        self.port = free_port()
        self.requests = 0
        self.patches = 0
        self.failures = 0

    def _on_change(self, kind: ChangeKind, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            self.index.remove(*object_key(obj))
        else:
            self.index.upsert(obj)

    async def start(self) -> None:
        await self._informer.start()
        await self._informer.synced.wait()
        app = web.Application()
        app.add_routes([web.post("/quay/{hash}", self.handle)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._informer.stop()

    async def handle(self, request: web.Request) -> web.Response:
        project = self._paths.get(request.path)
        if project is None:
            return web.json_response({"error": "not found"}, status=404)
        self.requests += 1
        try:
            data = orjson.loads(await request.read())
            docker_url = str(data["docker_url"])
            tags = [str(t) for t in data.get("updated_tags") or []]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"error": "invalid request body"}, status=400)
        matches = route(self.index, repo_urls(docker_url), tags, project)
        failures = 0
        for match in matches:  # one after the other, as Kargo does
            try:
                await merge_patch(self._api, WAREHOUSE, match.name,
                                  {"metadata": {"annotations": {REFRESH_ANNOTATION: _stamp()}}},
                                  namespace=match.namespace)
                self.patches += 1
            except Exception:  # noqa: BLE001 - counted, answered as Kargo does (500)
                failures += 1
        if failures:
            self.failures += failures
            return web.json_response(
                {"error": f"failed to refresh {failures} of {len(matches)} warehouses"},
                status=500)
        return web.json_response({"msg": f"refreshed {len(matches)} warehouse(s)"})
