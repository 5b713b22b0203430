"""Watching Warehouses' refresh annotations, as Kargo's controller would see them.

:class:`AnnotationWatch` runs pushrelay's own informer (list + watch with
bookmarks) on Warehouses and timestamps every change of the
``kargo.akuity.io/refresh`` annotation when its watch event is read — the
moment Kargo's controller would be told. Objects are trimmed to their name and
annotation on arrival.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio.client import ApiClient

from bench.cluster import refresh_value
from bench.load import now
from pushrelay.infra.kube.informer import ChangeKind, Informer
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION, WAREHOUSE

Key = tuple[str, str]
#: listener(key, when) for every new annotation value
Listener = Callable[[Key, float], None]


def _trim(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    value = refresh_value(obj)
    kept: dict[str, Any] = {k: meta[k] for k in ("namespace", "name", "resourceVersion")
                            if k in meta}
    if value is not None:
        kept["annotations"] = {REFRESH_ANNOTATION: value}
    return {"metadata": kept}


class AnnotationWatch:
    def __init__(self, api: ApiClient, namespace: str | None = None,
                 prefix: str | None = None) -> None:
        """Warehouses of ``namespace`` (all when None) whose namespace starts with
        ``prefix`` (all when None)."""
        self._prefix = prefix
        self._informer = Informer(api, WAREHOUSE, self._on_change, namespace=namespace,
                                  transform=_trim)
        self.values: dict[Key, str | None] = {}
        self.changes: collections.Counter[Key] = collections.Counter()
        self.last_change = 0.0
        self.listeners: list[Listener] = []

    async def start(self, within: float = 120.0) -> None:
        await self._informer.start()
        await asyncio.wait_for(self._informer.synced.wait(), within)

    async def stop(self) -> None:
        await self._informer.stop()

    @property
    def total(self) -> int:
        return sum(self.changes.values())

    def _on_change(self, kind: ChangeKind, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if self._prefix is not None and not key[0].startswith(self._prefix):
            return
        if kind == "DELETED":
            self.values.pop(key, None)
            return
        value = refresh_value(obj)
        if kind == "ADDED" and key not in self.values:
            self.values[key] = value
            return
        if value == self.values.get(key):
            return
        when = now()
        self.values[key] = value
        self.changes[key] += 1
        self.last_change = when
        for listener in self.listeners:
            listener(key, when)

    async def quiet(self, seconds: float, within: float,
                    until: Callable[[], bool] = lambda: True) -> bool:
        """Wait until ``until()`` holds and no change came for ``seconds``; False
        if that did not happen within ``within`` s."""
        deadline = now() + within
        while now() < deadline:
            if until() and now() - max(self.last_change, 0.0) >= seconds:
                return True
            await asyncio.sleep(0.1)
        return False
