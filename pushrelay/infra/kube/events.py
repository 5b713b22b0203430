"""Aggregated Kubernetes Events: many occurrences, few API writes.

``record()`` only updates memory. Repeated occurrences of one Event (same
object, reason, type and message) are counted, not written again. A *series*
(``series=True``) is for occurrences whose message names something new every
time — a push, a delivery: they are one Event per object, reason and type
whose ``count`` grows and whose message is the latest occurrence's (as
client-go combines "similar" Events), so a Warehouse refreshed for a thousand
different pushes is one Event, not a thousand.

A background flush writes what is pending every ``interval``: the first time
as a new Event, afterwards as a merge patch of ``count``, ``lastTimestamp`` and
``message``. Writes are capped at ``max_rate`` per second on average (Events
are visibility, never a write storm of their own); what is over the cap stays
pending, its count growing, and is written at a later flush, oldest first.
At most what the cap writes in 10 minutes is held; past that the
longest-waiting Event is dropped (counted in ``pushrelay_kube_events_dropped_total``).
Writes can also be put under the service's write budget (``acquire``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient

from pushrelay.infra import metrics
from pushrelay.infra.kube.client import merge_patch, request_json
from pushrelay.infra.kube.errors import Action, KubeError
from pushrelay.infra.kube.resources import EVENT, Resource

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


@dataclass(slots=True)
class _Entry:
    """One aggregated Event: what is written and what is still pending."""

    ref: ObjectRef
    type: str
    reason: str
    message: str  # the latest occurrence's
    first: float  # wall-clock time of the first occurrence
    last: float  # ... and of the latest
    count: int = 0  # occurrences not yet written
    total: int = 0  # occurrences written so far
    created: bool = False


_Key = tuple[str, str, str, str, str, str]  # namespace, name, kind, reason, type, message


def _ts(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(
        self, api: ApiClient, component: str, *, interval: float = 5.0,
        max_rate: float = 2.0, acquire: Callable[[], Awaitable[None]] | None = None,
        max_tracked: int | None = None, wall: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self._component = component
        self._interval = interval
        self._per_flush = max(1, round(max_rate * interval))
        self._acquire = acquire
        # Never more than the cap can write in 10 minutes: beyond that an Event
        # would be written too late to matter, and would only hold memory.
        self._max_tracked = max_tracked or max(100, round(max_rate * 600))
        self._wall = wall
        self._entries: dict[_Key, _Entry] = {}
        # Keys with pending occurrences, in the order they started waiting.
        self._due: dict[_Key, None] = {}
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    @property
    def pending(self) -> int:
        """Events with occurrences not written yet."""
        return len(self._due)

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
                pass
            if self._due:
                log.warning("shutdown: %d Kubernetes Events not written", len(self._due))

    def record(
        self, ref: ObjectRef, reason: str, message: str, type_: str = "Normal", *,
        series: bool = False,
    ) -> None:
        """One occurrence; ``series``: one Event per object/reason/type, latest message."""
        message = message[:1000]
        key = (ref.namespace, ref.name, ref.resource.kind, reason, type_,
               "" if series else message)
        now = self._wall()
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self._max_tracked:
                self._evict()
            entry = self._entries[key] = _Entry(ref, type_, reason, message, now, now)
        else:
            entry.message = message
            entry.last = now
            if ref.uid and ref.uid != entry.ref.uid:
                entry.ref = ref
        entry.count += 1
        if entry.count == 1:
            self._due[key] = None

    def _evict(self) -> None:
        """Forget written Events first; if all are pending, the longest-waiting one."""
        idle = [k for k in self._entries if k not in self._due]
        victims = idle[: max(1, len(idle) // 2)] or list(self._due)[:1]
        for key in victims:
            entry = self._entries.pop(key, None)
            if key in self._due:
                del self._due[key]
                if entry is not None:
                    metrics.kube_events_dropped.inc(entry.count)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        """Write up to the per-flush cap of pending Events, the longest-waiting first."""
        for key in list(self._due)[: self._per_flush]:
            entry = self._entries.get(key)
            if entry is None or entry.count == 0:
                self._due.pop(key, None)
                continue
            try:
                await self._write(key, entry)
            except KubeError as error:  # events are best effort: logged
                self._due.pop(key, None)  # (it may have been evicted meanwhile)
                if error.action is Action.RETRY:
                    self._due[key] = None  # again at a later flush, behind the others
                else:
                    entry.count = 0  # the object is gone or we may not write: give up
                log.debug("event write failed for %s/%s: %s",
                          entry.ref.namespace, entry.ref.name, error.reason)

    async def _write(self, key: _Key, entry: _Entry) -> None:
        if self._acquire is not None:
            await self._acquire()
        digest = hashlib.sha256("/".join(key).encode()).hexdigest()[:16]
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
            except KubeError as exc:  # 409: another replica made it
                if exc.status != 409:
                    raise
                entry.created = True
                await self._write(key, entry)
                return
            entry.created = True
        self.writes += 1
        metrics.kube_events_written.inc()
        entry.total += count
        entry.count -= count
        if entry.count == 0:
            self._due.pop(key, None)
