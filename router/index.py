"""The router's live Warehouse index: an informer feeding a :class:`WarehouseIndex`.

List + watch (with bookmarks, resume, re-list on 410) is the informer's job;
this module turns its changes into index updates and reports a Warehouse's
broken subscriptions once per generation — a warning log line and an
aggregated Kubernetes ``Warning`` Event on the Warehouse — never per event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes_asyncio.client import ApiClient

from pushrelay.core.matching import Compiler, Warehouse, WarehouseIndex
from pushrelay.infra import metrics
from pushrelay.infra.kube.events import EventRecorder, ObjectRef
from pushrelay.infra.kube.informer import ChangeKind, Informer, object_key, same_generation
from pushrelay.infra.kube.resources import WAREHOUSE

log = logging.getLogger(__name__)

INVALID_REASON = "InvalidSubscription"
#: A busy Warehouse watch is read at most every 0.1 s (a spec change then
#: reaches the index up to 0.1 s later; the refresh events it mostly carries
#: change nothing there).
WATCH_COALESCE = 0.1


_KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion",
                  "deletionTimestamp")


def trim(obj: dict[str, Any]) -> dict[str, Any]:
    """Keep what routing needs: 10,000 Warehouses' status and managedFields
    would otherwise dominate the router's memory."""
    meta = obj.get("metadata")
    spec = obj.get("spec")
    meta = meta if isinstance(meta, dict) else {}
    subs = spec.get("subscriptions") if isinstance(spec, dict) else None
    return {"metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta},
            "spec": {"subscriptions": subs if isinstance(subs, list) else []}}


class LiveIndex:
    def __init__(
        self, api: ApiClient, *, recorder: EventRecorder | None = None,
        compiler: Compiler | None = None, namespace: str | None = None,
    ) -> None:
        self.index = WarehouseIndex(compiler)
        self._recorder = recorder
        # A refresh PATCH (the annotation) comes back as a MODIFIED event of every
        # refreshed Warehouse: with the same generation it changes nothing here,
        # and under load such events are read in bursts (WATCH_COALESCE).
        self._informer = Informer(api, WAREHOUSE, self._on_change, namespace=namespace,
                                  transform=trim, unchanged=same_generation,
                                  coalesce=WATCH_COALESCE)
        self.reported = 0  # problems reported (a log line + an Event each)

    @property
    def synced(self) -> asyncio.Event:
        return self._informer.synced

    @property
    def last_error(self) -> str | None:
        return self._informer.last_error

    async def start(self) -> None:
        await self._informer.start()

    async def stop(self) -> None:
        await self._informer.stop()

    def _on_change(self, kind: ChangeKind, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            namespace, name = object_key(obj)
            self.index.remove(namespace, name)
        else:
            entry = self.index.upsert(obj)
            if entry is not None and entry.problems:
                self._report(entry)
        metrics.index_size.set(len(self.index))

    def _report(self, entry: Warehouse) -> None:
        ref = ObjectRef(WAREHOUSE, entry.namespace, entry.name, entry.uid)
        for sub in entry.problems:
            message = (f"subscription {sub.position} ({sub.kind} {sub.repo_url or '?'}) "
                       f"is skipped: {sub.error}")
            self.reported += 1
            log.warning("invalid Warehouse subscription", extra={
                "warehouse": f"{entry.namespace}/{entry.name}", "generation": entry.generation,
                "subscription": sub.position, "kind": sub.kind, "error": sub.error,
            })
            if self._recorder is not None:
                self._recorder.record(ref, INVALID_REASON, message, "Warning")
