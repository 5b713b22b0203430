"""Aggregated Kubernetes Events: many occurrences, few API writes.

``record()`` only updates memory. A background flush writes each distinct
(object, reason, message) once per ``interval``: the first time as a new Event,
afterwards as a merge patch of ``count`` and ``lastTimestamp``. So a burst of a
thousand identical occurrences costs one or two writes, and Event writes can be
put under the same write budget as everything else (``acquire``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient

from pushrelay.kube.client import merge_patch, request_json
from pushrelay.kube.errors import Action, classify
from pushrelay.kube.resources import EVENT, Resource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectRef:
    resource: Resource
    namespace: str
    name: str
    uid: str = ""

    def as_involved(self) -> dict[str, Any]:
        ref = {
            "apiVersion": self.resource.api_version, "kind": self.resource.kind,
            "name": self.name,
        }
        if self.resource.namespaced:  # a cluster-scoped object's Events live in "default"
            ref["namespace"] = self.namespace
        if self.uid:
            ref["uid"] = self.uid
        return ref


@dataclass
class _Pending:
    ref: ObjectRef
    type: str
    reason: str
    message: str
    count: int = 0  # occurrences not yet written
    total: int = 0  # occurrences written so far
    first: datetime = field(default_factory=lambda: datetime.now(UTC))
    last: datetime = field(default_factory=lambda: datetime.now(UTC))
    created: bool = False


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(
        self, api: ApiClient, component: str, *, interval: float = 5.0,
        acquire: Callable[[], Awaitable[None]] | None = None, max_tracked: int = 10_000,
    ) -> None:
        self._api = api
        self._component = component
        self._interval = interval
        self._acquire = acquire
        self._max_tracked = max_tracked
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"events:{self._component}")

    async def stop(self, flush_within: float = 3.0) -> None:
        """Stop the loop and flush once, for at most ``flush_within`` seconds.

        Events are best effort: a shutdown never waits on a slow API server for them.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            try:
                async with asyncio.timeout(flush_within):
                    await self.flush()
            except TimeoutError:
                pending = sum(1 for p in self._pending.values() if p.count)
                log.warning("shutdown: %d Kubernetes Events not written", pending)

    def record(
        self, ref: ObjectRef, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        message = message[:1000]
        digest = hashlib.sha256(
            f"{ref.namespace}/{ref.name}/{ref.resource.kind}/{reason}/{message}".encode()
        ).hexdigest()[:16]
        entry = self._pending.get(digest)
        if entry is None:
            if len(self._pending) >= self._max_tracked:
                self._evict()
            entry = self._pending[digest] = _Pending(ref, type_, reason, message)
        entry.count += 1
        entry.last = datetime.now(UTC)

    def _evict(self) -> None:
        idle = [k for k, p in self._pending.items() if p.count == 0]
        for key in idle[: max(1, len(idle) // 2)] or list(self._pending)[:1]:
            self._pending.pop(key, None)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        for digest, entry in list(self._pending.items()):
            if entry.count == 0:
                continue
            try:
                await self._write(digest, entry)
            except Exception as exc:  # noqa: BLE001 - events are best effort, logged
                error = classify(exc)
                if error.action is not Action.RETRY:
                    entry.count = 0  # the object is gone or we may not write: give up
                log.debug("event write failed for %s/%s: %s",
                          entry.ref.namespace, entry.ref.name, error.reason)

    async def _write(self, digest: str, entry: _Pending) -> None:
        if self._acquire is not None:
            await self._acquire()
        name = f"{entry.ref.name[:200]}.pushrelay-{digest}"
        count = entry.count
        if entry.created:
            await merge_patch(
                self._api, EVENT, name,
                {"count": entry.total + count, "lastTimestamp": _ts(entry.last),
                 "message": entry.message},
                namespace=entry.ref.namespace,
            )
        else:
            body = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": entry.ref.namespace},
                "involvedObject": entry.ref.as_involved(),
                "reason": entry.reason, "message": entry.message, "type": entry.type,
                "source": {"component": self._component},
                "reportingComponent": self._component, "reportingInstance": self._component,
                "firstTimestamp": _ts(entry.first), "lastTimestamp": _ts(entry.last),
                "count": count,
            }
            try:
                await request_json(
                    self._api, "POST", EVENT.path(entry.ref.namespace), body=body
                )
            except Exception as exc:  # noqa: BLE001 - 409: another replica made it
                if classify(exc).status != 409:
                    raise
                entry.created = True
                await self._write(digest, entry)
                return
            entry.created = True
        self.writes += 1
        entry.total += count
        entry.count -= count
