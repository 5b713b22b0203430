"""Helpers for the refresher's integration tests (real Kafka, real kube-apiserver).

* :class:`RefreshWatch` counts patches the way the API server saw them: an
  informer (list + watch) on the test namespace's Warehouses records every
  distinct ``kargo.akuity.io/refresh`` value, with no help from the service.
* :func:`produce` publishes refresh requests through the bus and waits until
  they are durable; :func:`read_topic` reads a topic through the bus.
  Group offsets (:func:`committed_offsets`, :func:`end_offsets`) are Kafka's.
* :class:`ExtraApiserver` runs a *second* kube-apiserver on the devstack's etcd,
  on its own port, so a test can stop it, restart it, or give it tiny
  in-flight limits without touching the shared stack's apiserver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.events import Cause, RefreshRequest, WarehouseRef, encode
from pushrelay.infra.bus.api import Bus
from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.informer import Informer
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION, WAREHOUSE
from pushrelay.infra.settings import Settings
from refresher.service import RefresherService
from tests.integration.bus_support import bus_for, read_records, send_all

REPO = "quay.io/acme/app"


def warehouse_body(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": WAREHOUSE.api_version, "kind": WAREHOUSE.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"subscriptions": [{"image": {"repoURL": REPO}}]},
    }


async def create_warehouses(api: ApiClient, namespace: str, names: Iterable[str]) -> None:
    await asyncio.gather(*(
        request_json(api, "POST", WAREHOUSE.path(namespace), body=warehouse_body(namespace, n))
        for n in names
    ))


def parse_refresh(value: str) -> float:
    """Seconds since the epoch of a refresh value (nanoseconds cut to micro)."""
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{frac[:6]}+00:00").timestamp()


@dataclass
class RefreshWatch:
    """Every refresh value each Warehouse of a namespace took, seen by a watch."""

    api: ApiClient
    namespace: str
    values: dict[str, list[str]] = field(default_factory=dict)
    informer: Informer | None = None

    def _on_change(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        value = (meta.get("annotations") or {}).get(REFRESH_ANNOTATION)
        seen = self.values.setdefault(meta.get("name", ""), [])
        if value and (not seen or seen[-1] != value):
            seen.append(value)

    async def start(self) -> None:
        self.informer = Informer(self.api, WAREHOUSE, self._on_change, namespace=self.namespace)
        await self.informer.start()
        await asyncio.wait_for(self.informer.synced.wait(), 30)

    async def stop(self) -> None:
        if self.informer is not None:
            await self.informer.stop()

    def patches(self, name: str | None = None) -> int:
        if name is not None:
            return len(self.values.get(name, []))
        return sum(len(v) for v in self.values.values())

    def last_refresh(self, name: str) -> float:
        seen = self.values.get(name)
        return parse_refresh(seen[-1]) if seen else 0.0

    def refreshed_after(self, deadlines: dict[str, float]) -> bool:
        """Every Warehouse has a refresh value later than its deadline (epoch s)."""
        return all(self.last_refresh(n) > t for n, t in deadlines.items())


@asynccontextmanager
async def watching(api: ApiClient, namespace: str) -> AsyncIterator[RefreshWatch]:
    watch = RefreshWatch(api, namespace)
    await watch.start()
    try:
        yield watch
    finally:
        await watch.stop()


def request(namespace: str, name: str, delivery: str, tags: Sequence[str] = ("v1.0.0",),
            ) -> RefreshRequest:
    return RefreshRequest(
        warehouse=WarehouseRef(namespace=namespace, name=name),
        cause=Cause(event=f"ev-{delivery}", repo_url=REPO, tags=list(tags), delivery=delivery),
    )


async def produce(settings: Settings, requests: Iterable[RefreshRequest | bytes],
                  *, bus: Bus | None = None) -> dict[str, float]:
    """Publish through ``bus`` (default: the settings' own) and wait until durable.

    Returns, per Warehouse name, the time (epoch s) just before its last request
    was sent: a refresh value later than that is a refresh after that request.
    """
    sent: dict[str, float] = {}

    def records() -> Iterable[tuple[bytes | None, bytes]]:
        for req in requests:
            if isinstance(req, bytes):
                yield b"junk", req
                continue
            sent[req.warehouse.name] = time.time()
            yield req.key, encode(req)

    async with bus_for(settings, bus) as the_bus:
        await send_all(the_bus, settings.refresh_topic, records())
    return sent


@asynccontextmanager
async def running_refresher(settings: Settings, **options: Any,
                            ) -> AsyncIterator[RefresherService]:
    service = RefresherService(settings, **options)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def committed_offsets(settings: Settings) -> dict[int, int]:
    """The refresher group's committed offset per partition of refresh-requests."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.refresher_group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == settings.refresh_topic}


async def end_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    """End offset per partition of ``topic`` (default: refresh-requests)."""
    topic = topic or settings.refresh_topic
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def all_committed(settings: Settings) -> bool:
    ends = {p: o for p, o in (await end_offsets(settings)).items() if o > 0}
    committed = await committed_offsets(settings)
    return all(committed.get(p, -1) >= o for p, o in ends.items())


async def read_topic(settings: Settings, topic: str, count: int, within: float = 30.0,
                     *, bus: Bus | None = None) -> list[bytes]:
    """The values of ``topic`` once it holds at least ``count`` (through ``bus``,
    default: the settings' own)."""
    async with bus_for(settings, bus) as the_bus:
        return [r.value for r in await read_records(the_bus, topic, count, within)]


async def warehouse_events(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    body = await request_json(api, "GET", f"/api/v1/namespaces/{namespace}/events")
    return [e for e in body.get("items", [])
            if (e.get("involvedObject") or {}).get("kind") == "Warehouse"]


async def grant_refresher_rights(kube: ApiClient, namespace: str, user: str) -> None:
    """The refresher's least privilege in one namespace: patch Warehouses, write Events."""
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    rules: list[dict[str, Any]] = [
        {"apiGroups": ["kargo.akuity.io"], "resources": ["warehouses"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    await request_json(kube, "POST", f"{rbac}/roles",
                       body={"metadata": {"name": "refresher"}, "rules": rules})
    await request_json(kube, "POST", f"{rbac}/rolebindings", body={
        "metadata": {"name": "refresher"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "refresher"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    from pushrelay.infra.metrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


# ---- a private kube-apiserver on the shared etcd ----------------------------------


class ExtraApiserver:
    """A second kube-apiserver on the devstack's etcd: stop and start it at will.

    Same certificates, same storage, its own port and process, so outages and
    tiny in-flight limits are tested without disturbing the shared apiserver
    other tests use. Objects written through it are visible through the shared
    one (and the other way round). Blocking calls: run them in a thread.
    """

    def __init__(self, state_dir: Path, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        from pushrelay_devstack import gobuild, ports, procs
        from pushrelay_devstack.certs import Pki
        from pushrelay_devstack.paths import StatePaths

        paths = StatePaths(state_dir)
        self.pki = Pki(paths.pki)
        self.etcd_port = ports.load(paths.ports_file)["etcd"]
        self.port = procs.free_port()
        self.binary = gobuild.ensure_kube_apiserver(lambda _: None)
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self._rec: Any = None

    @property
    def log(self) -> Path:
        return self.workdir / "extra-apiserver.log"

    def start(self) -> None:
        from pushrelay_devstack import kube, procs
        from pushrelay_devstack.kubeapi import KubeHTTP

        argv = kube.apiserver_argv(self.binary, self.pki, self.port, self.etcd_port,
                                   self.extra_args)
        argv = [a for a in argv if not a.startswith("--cert-dir=")]
        argv.append(f"--cert-dir={self.workdir / 'certs'}")
        self._rec = procs.start("extra-apiserver", argv, log=self.log,
                                record=self.workdir / "extra-apiserver.json", port=self.port)
        kube.wait_apiserver(self._rec, KubeHTTP.admin(self.pki, self.port))

    def stop(self) -> None:
        from pushrelay_devstack import procs

        if self._rec is not None:
            procs.stop(self._rec)
            self._rec = None

    def kubeconfig(self, user: str = "admin") -> Path:
        from pushrelay_devstack.kubeapi import write_kubeconfig

        return write_kubeconfig(self.workdir / f"{user}.kubeconfig", self.pki, self.port, user)
