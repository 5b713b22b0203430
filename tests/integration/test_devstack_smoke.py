"""The devstack is real: Kafka round-trips, the CRDs serve, RBAC denies.

Uses the session fixture ``devstack_env`` (tests/integration/conftest.py,
backed by ``tests.devstack_fixtures.ensure_devstack``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from pushrelay_devstack.stack import mint_user_kubeconfig
from tests.devstack_fixtures import state_dir_of

pytestmark = pytest.mark.integration

GROUP, VERSION = "kargo.akuity.io", "v1alpha1"
REFRESH = "kargo.akuity.io/refresh"
MERGE_PATCH = "application/merge-patch+json"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _api(kubeconfig: str) -> client.ApiClient:
    return await config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture
async def admin(devstack_env: dict[str, str]) -> AsyncIterator[client.ApiClient]:
    api = await _api(devstack_env["KUBECONFIG"])
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
async def smoke_ns(admin: client.ApiClient) -> AsyncIterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        await core.delete_namespace(name)


def _warehouse(name: str, subscriptions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Warehouse",
        "metadata": {"name": name},
        "spec": {"subscriptions": subscriptions},
    }


async def test_kafka_produce_and_consume(devstack_env: dict[str, str]) -> None:
    bootstrap = devstack_env["PUSHRELAY_KAFKA_BOOTSTRAP"]
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b'{"hello":"kafka"}', key=b"k1")
    finally:
        await producer.stop()
    assert meta.offset == 0

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"{topic}-g",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k1", b'{"hello":"kafka"}')


async def test_warehouse_refresh_annotation_round_trip(
    admin: client.ApiClient, smoke_ns: str
) -> None:
    api = client.CustomObjectsApi(admin)
    sub = {"image": {"repoURL": "quay.io/acme/app", "constraint": "^1.0.0",
                     "allowTagsRegexes": ["^v"], "strictSemvers": False}}
    await api.create_namespaced_custom_object(
        GROUP, VERSION, smoke_ns, "warehouses", _warehouse("app", [sub])
    )
    stamp = _now()
    await api.patch_namespaced_custom_object(
        GROUP, VERSION, smoke_ns, "warehouses", "app",
        {"metadata": {"annotations": {REFRESH: stamp}}}, _content_type=MERGE_PATCH,
    )
    got = await api.get_namespaced_custom_object(GROUP, VERSION, smoke_ns, "warehouses", "app")
    assert got["metadata"]["annotations"][REFRESH] == stamp
    assert got["spec"]["subscriptions"][0] == sub  # typed fields kept as written


async def test_restricted_user_gets_403_on_refresh_patch(
    admin: client.ApiClient, smoke_ns: str, devstack_env: dict[str, str]
) -> None:
    api = client.CustomObjectsApi(admin)
    await api.create_namespaced_custom_object(
        GROUP, VERSION, smoke_ns, "warehouses", _warehouse("locked", [])
    )
    kubeconfig = mint_user_kubeconfig(
        state_dir_of(devstack_env), f"nobody-{uuid.uuid4().hex[:6]}", ["pushrelay:testers"]
    )
    restricted = await _api(str(kubeconfig))
    try:
        with pytest.raises(ApiException) as err:
            await client.CustomObjectsApi(restricted).patch_namespaced_custom_object(
                GROUP, VERSION, smoke_ns, "warehouses", "locked",
                {"metadata": {"annotations": {REFRESH: _now()}}}, _content_type=MERGE_PATCH,
            )
    finally:
        await restricted.close()
    assert err.value.status == 403


async def test_crds_are_lenient_and_projectconfig_has_status(
    admin: client.ApiClient, smoke_ns: str
) -> None:
    api = client.CustomObjectsApi(admin)
    # Malformed on purpose: two kinds in one subscription, another with no repoURL.
    bad = [{"image": {"repoURL": "quay.io/a/b"}, "git": {"repoURL": "https://x/y.git"}},
           {"chart": {"name": "c"}}, {"image": {"repoURL": "r", "allowTags": "^v"}}]
    await api.create_namespaced_custom_object(
        GROUP, VERSION, smoke_ns, "warehouses", _warehouse("bad", bad)
    )
    pc = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ProjectConfig",
          "metadata": {"name": smoke_ns},
          "spec": {"webhookReceivers": [{"name": "quay", "quay": {"secretRef": {"name": "s"}}}]},
          "status": {"webhookReceivers": [{"name": "ignored-on-create"}]}}
    await api.create_namespaced_custom_object(GROUP, VERSION, smoke_ns, "projectconfigs", pc)
    status = {"status": {"webhookReceivers": [{"name": "quay", "path": "/quay/ab", "url": "u"}]}}
    await api.patch_namespaced_custom_object_status(
        GROUP, VERSION, smoke_ns, "projectconfigs", smoke_ns, status, _content_type=MERGE_PATCH,
    )
    got = await api.get_namespaced_custom_object(
        GROUP, VERSION, smoke_ns, "projectconfigs", smoke_ns
    )
    assert got["status"] == status["status"]
    assert got["spec"]["webhookReceivers"][0]["quay"]["secretRef"]["name"] == "s"


async def test_clusterconfig_and_system_resources_namespace(admin: client.ApiClient) -> None:
    await client.CoreV1Api(admin).read_namespace("kargo-system-resources")
    api = client.CustomObjectsApi(admin)
    name = f"smoke-{uuid.uuid4().hex[:6]}"  # not "cluster": other tests own that one
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterConfig",
            "metadata": {"name": name},
            "spec": {"webhookReceivers": [{"name": "q", "quay": {"secretRef": {"name": "s"}}}]}}
    await api.create_cluster_custom_object(GROUP, VERSION, "clusterconfigs", body)
    try:
        got = await api.get_cluster_custom_object(GROUP, VERSION, "clusterconfigs", name)
        assert got["spec"]["webhookReceivers"][0]["name"] == "q"
    finally:
        await api.delete_cluster_custom_object(GROUP, VERSION, "clusterconfigs", name)


async def test_deleted_namespace_goes_away_with_its_warehouses(admin: client.ApiClient) -> None:
    core, api = client.CoreV1Api(admin), client.CustomObjectsApi(admin)
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    await api.create_namespaced_custom_object(
        GROUP, VERSION, name, "warehouses", _warehouse("doomed", [])
    )
    await core.delete_namespace(name)
    async with asyncio.timeout(60):  # kube-controller-manager's namespace controller
        while True:
            try:
                await core.read_namespace(name)
            except ApiException as exc:
                assert exc.status == 404
                break
            await asyncio.sleep(0.2)
    left = await api.list_cluster_custom_object(
        GROUP, VERSION, "warehouses", field_selector=f"metadata.namespace={name}"
    )
    assert left["items"] == []
