"""The refresher's prepared PATCH path (``MergePatcher``) against the real API server.

Every answer must be translated exactly as through ``call_api`` +
:func:`~pushrelay.infra.kube.client.request_json`: the same :class:`KubeError`
action, status, reason and ``Status`` fields, so the refresher's outcomes
(retry / drop / dead-letter) do not change. Each case is sent both ways and
compared, then checked for what the refresher does with it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.events import WarehouseRef
from pushrelay.infra.kube.client import (
    MergePatcher,
    get_object,
    merge_patch,
    new_api_client,
)
from pushrelay.infra.kube.errors import Action, KubeError
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION, WAREHOUSE, Resource
from refresher.patcher import Outcome, Patcher, outcome_of, retry_reason
from tests.integration.refresher_support import create_warehouses

NOT_SERVED = Resource("kargo.akuity.io", "v1alpha1", "nosuchthings", "NoSuchThing", True)


async def failure(call: Callable[[], Awaitable[Any]]) -> KubeError:
    with pytest.raises(KubeError) as caught:
        await call()
    return caught.value


def same(new: KubeError, old: KubeError) -> None:
    assert (new.action, new.status, new.reason, new.api_reason, new.name) == (
        old.action, old.status, old.reason, old.api_reason, old.name)


async def both_ways(kube: ApiClient, resource: Resource, name: str, namespace: str,
                    patch: dict[str, Any]) -> KubeError:
    """The error of ``patch`` through the prepared path, checked equal to the old path's."""
    new = await failure(lambda: MergePatcher(kube, resource).patch(
        name, namespace, orjson.dumps(patch)))
    old = await failure(lambda: merge_patch(kube, resource, name, patch, namespace=namespace))
    same(new, old)
    return new


async def test_a_patch_returns_the_objects_uid_and_new_version(
    kube: ApiClient, namespace: str,
) -> None:
    await create_warehouses(kube, namespace, ["app"])
    written = await MergePatcher(kube, WAREHOUSE).patch(
        "app", namespace, orjson.dumps({"metadata": {"annotations": {REFRESH_ANNOTATION: "x"}}}))
    obj = await get_object(kube, WAREHOUSE, "app", namespace)
    assert obj["metadata"]["annotations"][REFRESH_ANNOTATION] == "x"
    assert written.uid == obj["metadata"]["uid"]
    assert written.resource_version == obj["metadata"]["resourceVersion"]
    patched = await Patcher(kube).refresh(WarehouseRef(namespace=namespace, name="app"))
    obj = await get_object(kube, WAREHOUSE, "app", namespace)
    assert obj["metadata"]["annotations"][REFRESH_ANNOTATION] == patched.value
    assert (patched.uid, patched.resource_version) == (
        obj["metadata"]["uid"], obj["metadata"]["resourceVersion"])


async def test_404_of_the_warehouse_drops(kube: ApiClient, namespace: str) -> None:
    error = await both_ways(kube, WAREHOUSE, "gone", namespace, {"metadata": {}})
    assert error.status == 404 and error.is_not_found("gone")
    refused = await failure(lambda: Patcher(kube).refresh(
        WarehouseRef(namespace=namespace, name="gone")))
    assert outcome_of(refused) is Outcome.DROP


async def test_404_of_a_resource_not_served_is_retried(kube: ApiClient, namespace: str) -> None:
    error = await both_ways(kube, NOT_SERVED, "x", namespace, {"metadata": {}})
    assert error.status == 404 and not error.is_not_found("x")


async def test_409_stale_resource_version_is_retried(kube: ApiClient, namespace: str) -> None:
    await create_warehouses(kube, namespace, ["app"])
    error = await both_ways(kube, WAREHOUSE, "app", namespace,
                            {"metadata": {"resourceVersion": "1", "annotations": {"a": "b"}}})
    assert error.status == 409
    assert outcome_of(error) is Outcome.RETRY and retry_reason(error) == "409"


async def test_422_invalid_patch_is_rejected(kube: ApiClient, namespace: str) -> None:
    await create_warehouses(kube, namespace, ["app"])
    error = await both_ways(kube, WAREHOUSE, "app", namespace,
                            {"metadata": {"annotations": {"not a key!": "x"}}})
    assert error.status == 422 and outcome_of(error) is Outcome.REJECT


async def test_403_is_rejected(
    kube: ApiClient, namespace: str, devstack_env: dict[str, str],
) -> None:
    from pushrelay_devstack.stack import mint_user_kubeconfig
    from tests.devstack_fixtures import state_dir_of

    await create_warehouses(kube, namespace, ["app"])
    user = f"no-patch-{uuid.uuid4().hex[:6]}"
    api = await new_api_client(str(mint_user_kubeconfig(state_dir_of(devstack_env), user)))
    try:
        error = await both_ways(api, WAREHOUSE, "app", namespace, {"metadata": {}})
    finally:
        await api.close()
    assert error.status == 403 and outcome_of(error) is Outcome.REJECT


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_timeout_and_connection_refused_are_retried(
    kube: ApiClient, silent_port: int,
) -> None:
    api = await new_api_client()
    try:
        api.configuration.host = f"http://127.0.0.1:{silent_port}"
        timed_out = await failure(lambda: MergePatcher(api, WAREHOUSE, request_timeout=0.2)
                                  .patch("app", "ns", b"{}"))
        assert timed_out.action is Action.RETRY and retry_reason(timed_out) == "timeout"
        api.configuration.host = "http://127.0.0.1:9"  # discard: nothing listens
        refused = await failure(lambda: MergePatcher(api, WAREHOUSE).patch("app", "ns", b"{}"))
        old = await failure(lambda: merge_patch(api, WAREHOUSE, "app", {}, namespace="ns"))
        assert refused.action is Action.RETRY and retry_reason(refused) == "connection"
        assert retry_reason(old) == "connection"
    finally:
        await api.close()
