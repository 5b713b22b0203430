"""Kubernetes objects of the benchmarks: projects with a Quay receiver, Warehouses.

A *project* is what ``pushrelay demo`` creates: a Namespace, a Secret with a
``secret`` key and a ProjectConfig whose ``spec.webhookReceivers`` has one Quay
receiver. Its path is computed exactly as Kargo does
(``/quay/sha256(project + name + secret)``), so no status needs to be written.

Warehouse layout: Warehouse ``w<j>`` subscribes to ``quay.io/bench/<repo>``
(constraint ``^1.0.0``) plus a Git repository, as real Warehouses do; pushes
carry the tag ``v1.2.3``, which qualifies.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.receivers import receiver_hash
from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.resources import PROJECT_CONFIG, SECRET, WAREHOUSE

RECEIVER = "quay"
SECRET_NAME = "quay-webhook"
TAG = "v1.2.3"
REGISTRY = "quay.io/bench"
CONCURRENCY = 32


@dataclass(frozen=True)
class Target:
    """One Warehouse and the receiver path that reaches it."""

    namespace: str
    name: str
    repo: str  # repository part after quay.io/bench/
    path: str  # receiver path of its namespace's project

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def payload(repo: str, tag: str = TAG) -> bytes:
    """A Quay.io "Push to Repository" body for ``quay.io/bench/<repo>``."""
    return orjson.dumps({
        "name": repo, "repository": f"bench/{repo}", "namespace": "bench",
        "docker_url": f"{REGISTRY}/{repo}",
        "homepage": f"https://quay.io/repository/bench/{repo}",
        "updated_tags": [tag],
    })


def warehouse_body(name: str, repo: str) -> dict[str, Any]:
    return {
        "apiVersion": WAREHOUSE.api_version, "kind": "Warehouse", "metadata": {"name": name},
        "spec": {"subscriptions": [
            {"image": {"repoURL": f"{REGISTRY}/{repo}", "constraint": "^1.0.0"}},
            {"git": {"repoURL": f"https://git.example.com/bench/{name}.git"}},
        ]},
    }


async def create_object(api: ApiClient, path: str, body: dict[str, Any]) -> None:
    for attempt in range(5):
        try:
            await request_json(api, "POST", path, body=body, request_timeout=60)
            return
        except KubeError as exc:
            if exc.status == 409:
                return
            if attempt == 4 or (exc.status is not None and exc.status < 500
                                and exc.status != 429):
                raise
            await asyncio.sleep(0.5 * (attempt + 1))


async def gather_bounded(calls: Iterable[Any], limit: int = CONCURRENCY) -> None:
    sem = asyncio.Semaphore(limit)

    async def run(call: Any) -> None:
        async with sem:
            await call

    await asyncio.gather(*(run(c) for c in calls))


async def create_projects(api: ApiClient, namespaces: Sequence[str]) -> dict[str, str]:
    """Namespace + Secret + ProjectConfig each; returns namespace → receiver path."""
    paths: dict[str, str] = {}

    async def one(ns: str) -> None:
        # Derived from the name: a devstack kept from an earlier run has the same one.
        secret = hashlib.sha256(f"pushrelay-bench/{ns}".encode()).hexdigest()[:48]
        await create_object(api, "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        await create_object(api, SECRET.path(ns), {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET_NAME},
            "data": {"secret": base64.b64encode(secret.encode()).decode()}})
        await create_object(api, PROJECT_CONFIG.path(ns), {
            "apiVersion": PROJECT_CONFIG.api_version, "kind": "ProjectConfig",
            "metadata": {"name": ns},
            "spec": {"webhookReceivers": [
                {"name": RECEIVER, "quay": {"secretRef": {"name": SECRET_NAME}}}]}})
        paths[ns] = f"/quay/{receiver_hash(ns, RECEIVER, secret)}"

    await gather_bounded(one(ns) for ns in namespaces)
    return paths


async def create_warehouses(api: ApiClient, targets: Sequence[Target]) -> None:
    await gather_bounded(
        create_object(api, WAREHOUSE.path(t.namespace), warehouse_body(t.name, t.repo))
        for t in targets)


def refresh_value(obj: dict[str, Any]) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get("kargo.akuity.io/refresh")
    return str(value) if value is not None else None
