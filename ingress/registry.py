"""The live receiver table: informers on ProjectConfigs, the ClusterConfig and Secrets.

Every change to a config, or to a Secret a config refers to, marks the table
dirty; one background task reads the referenced Secrets that changed (only
those: :mod:`ingress.secrets`), rebuilds the table (pure code in
:mod:`pushrelay.core.receivers`) and swaps it in whole, so a lookup is one dictionary
access and no API call is ever made per request. Secret rotation therefore takes
effect one read after the watch event arrives: the old path is gone, the new one
served.

A receiver that cannot be served (Secret or its ``secret`` key missing, name
collision, ...) is reported once per change: a log line, a Warning Event on its
ProjectConfig / ClusterConfig and, with ``write_status``, the ``Ready`` condition.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes_asyncio.client import ApiClient

from ingress.secrets import ReferencedSecrets
from ingress.status import StatusWriter
from pushrelay.core.receivers import (
    CLUSTER_CONFIG_KIND,
    ConfigReceivers,
    Owner,
    Receiver,
    Unserved,
    index_receivers,
    receivers_for,
    secret_refs,
)
from pushrelay.infra import metrics
from pushrelay.infra.kube.events import EventRecorder, ObjectRef
from pushrelay.infra.kube.informer import ChangeKind, Informer
from pushrelay.infra.kube.resources import CLUSTER_CONFIG, CLUSTER_CONFIG_NAME, PROJECT_CONFIG
from pushrelay.infra.settings import IngressSettings

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0


def object_ref(owner: Owner) -> ObjectRef:
    if owner.kind == CLUSTER_CONFIG_KIND:
        return ObjectRef(CLUSTER_CONFIG, "default", owner.name, owner.uid)
    return ObjectRef(PROJECT_CONFIG, owner.namespace, owner.name, owner.uid)


class ReceiverRegistry:
    def __init__(self, settings: IngressSettings) -> None:
        self._settings = settings
        self.table: dict[str, Receiver] = {}
        self.unserved: list[Unserved] = []
        self._dirty = asyncio.Event()
        self._built = False
        self._ready = False
        self._informers: list[Informer] = []
        self._recorder: EventRecorder | None = None
        self._api: ApiClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._served_before: set[tuple[Owner, str, str]] = set()
        self._unserved_before: set[Unserved] = set()
        self.status: StatusWriter | None = None  # with write_status: the status writer
        self._retry = False
        self.rebuilds = 0

    # ---- lifecycle ---------------------------------------------------------
    async def start(self, api: ApiClient, recorder: EventRecorder | None = None) -> None:
        if self._task is not None:
            return
        self._api, self._recorder = api, recorder
        self.status = StatusWriter(api)
        self._configs = Informer(api, PROJECT_CONFIG, self._config_changed)
        self._cluster = Informer(api, CLUSTER_CONFIG, self._config_changed)
        self._secrets = ReferencedSecrets(api, self._dirty.set)
        self._informers = [self._configs, self._cluster, self._secrets.informer]
        for informer in self._informers:
            await informer.start()
        self._task = asyncio.create_task(self._run(), name="ingress:registry")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for informer in self._informers:
            await informer.stop()

    def readiness(self) -> str | None:
        """None once every informer listed and the first table is built (for good:
        informers stay synced and the table is only ever swapped, so once ready
        this is one attribute read per request)."""
        if self._ready:
            return None
        waiting = [i.resource.plural for i in self._informers if not i.synced.is_set()]
        if waiting or not self._informers:
            return "listing " + (", ".join(waiting) or "receivers")
        if not self._built:
            return "building the receiver table"
        self._ready = True
        return None

    def lookup(self, path: str) -> Receiver | None:
        return self.table.get(path)

    # ---- change handling -----------------------------------------------------
    def _config_changed(self, kind: ChangeKind, obj: dict[str, Any]) -> None:
        self._dirty.set()

    async def _run(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self._informers))
        while True:
            self._dirty.clear()
            self._retry = False
            refs = {ref for obj in self._config_objects() for ref in secret_refs(
                obj, system_resources_namespace=self._settings.system_resources_namespace)}
            if not await self._secrets.sync(refs):
                self._retry = True  # a read failed: try again after a pause
            configs = self.rebuild()
            if self._settings.write_status:
                await self._write_statuses(configs)
            if self._retry:
                try:
                    await asyncio.wait_for(self._dirty.wait(), RETRY_SECONDS)
                except TimeoutError:
                    pass
            else:
                await self._dirty.wait()

    def _config_objects(self) -> list[dict[str, Any]]:
        objects = list(self._configs.store.values())
        cluster = self._cluster.store.get(("", CLUSTER_CONFIG_NAME))
        if cluster is not None:
            objects.append(cluster)
        return objects

    def rebuild(self) -> list[tuple[dict[str, Any], ConfigReceivers]]:
        """Recompute the table from the informers' stores and swap it in."""
        configs = [
            (obj, receivers_for(
                obj, base_url=self._settings.base_url, lookup=self._secrets.get,
                system_resources_namespace=self._settings.system_resources_namespace))
            for obj in self._config_objects()
        ]
        table, unserved = index_receivers(c for _, c in configs)
        self.table, self.unserved = table, unserved
        self._built = True
        self.rebuilds += 1
        metrics.receivers_served.labels("served").set(len(table))
        metrics.receivers_served.labels("unserved").set(len(unserved))
        self._report(table, unserved)
        return configs

    def _report(self, table: dict[str, Receiver], unserved: list[Unserved]) -> None:
        served = {(r.owner, r.name, r.path) for r in table.values()}
        for receiver in table.values():
            if (receiver.owner, receiver.name, receiver.path) in self._served_before:
                continue
            log.info("serving receiver", extra={
                "receiver": receiver.name, "owner": str(receiver.owner),
                "hash": receiver.short_hash})
            self._event(receiver.owner, "WebhookReceiverServed",
                        f"Quay.io receiver {receiver.name!r} served at "
                        f".../quay/{receiver.short_hash}...", "Normal")
        current = set(unserved)
        for problem in current - self._unserved_before:
            log.warning("receiver not served", extra={
                "receiver": problem.name, "owner": str(problem.owner), "reason": problem.reason})
            self._event(problem.owner, "WebhookReceiverUnserved",
                        f"Quay.io receiver {problem.name!r} is not served: {problem.reason}",
                        "Warning")
        self._served_before, self._unserved_before = served, current

    def _event(self, owner: Owner, reason: str, message: str, type_: str) -> None:
        if self._recorder is not None:
            self._recorder.record(object_ref(owner), reason, message, type_)

    # ---- status --------------------------------------------------------------
    async def _write_statuses(self, configs: list[tuple[dict[str, Any], ConfigReceivers]]) -> None:
        assert self.status is not None
        served_paths = self.table
        unserved_by_owner: dict[Owner, list[Unserved]] = {}
        for problem in self.unserved:
            unserved_by_owner.setdefault(problem.owner, []).append(problem)
        for obj, config in configs:
            owner = config.owner
            served = [r for r in config.served if served_paths.get(r.path) is r]
            if await self.status.write(obj, owner, served, unserved_by_owner.get(owner, [])):
                self._retry = True
