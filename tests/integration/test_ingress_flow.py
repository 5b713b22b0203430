"""The ingress on the real devstack: the bus, kube-apiserver, an in-process service.

Helpers here are imported by ``test_ingress_outage``. Every test has its own
namespace and topics; the ClusterConfig ``cluster`` is shared, so the one test
that needs it adds and removes only its own receiver.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import ClientSession
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes_asyncio.client import ApiClient

from ingress.service import IngressService, create
from pushrelay.core.events import PushEvent, decode_push
from pushrelay.infra.bus.api import Bus
from pushrelay.infra.kube.client import request_json
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.resources import CLUSTER_CONFIG, PROJECT_CONFIG, SECRET
from pushrelay.infra.settings import Settings
from tests.integration.bus_support import bus_for
from tests.integration.conftest import eventually, make_settings

PAYLOAD = {
    "name": "repository", "repository": "mynamespace/repository", "namespace": "mynamespace",
    "docker_url": "quay.io/mynamespace/repository",
    "homepage": "https://quay.io/repository/mynamespace/repository",
    "updated_tags": ["latest"],
}


def expected_path(project: str, name: str, secret: str) -> str:
    """Computed here, independently of pushrelay.core.receivers."""
    return "/quay/" + hashlib.sha256((project + name + secret).encode()).hexdigest()


def quay_receiver(name: str, secret_name: str) -> dict[str, Any]:
    return {"name": name, "quay": {"secretRef": {"name": secret_name}}}


async def put_secret(kube: ApiClient, namespace: str, name: str,
                     data: dict[str, str]) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    try:
        await request_json(kube, "POST", SECRET.path(namespace), body=body)
    except KubeError as exc:
        if exc.status != 409:
            raise
        await request_json(kube, "PUT", SECRET.path(namespace, name), body=body)


async def create_project_config(kube: ApiClient, namespace: str,
                                receivers: list[dict[str, Any]]) -> None:
    body = {"apiVersion": PROJECT_CONFIG.api_version, "kind": "ProjectConfig",
            "metadata": {"name": namespace}, "spec": {"webhookReceivers": receivers}}
    await request_json(kube, "POST", PROJECT_CONFIG.path(namespace), body=body)


async def get_project_config(kube: ApiClient, namespace: str) -> dict[str, Any]:
    return await request_json(kube, "GET", PROJECT_CONFIG.path(namespace, namespace))


@asynccontextmanager
async def running_ingress(settings: Settings, *, bus: Bus | None = None,
                          ) -> AsyncIterator[IngressService]:
    """An ingress on ``bus`` (None: a Kafka bus of its own), ready."""
    service = create(settings, bus=bus)
    await service.start()
    try:
        await eventually(lambda: service.readiness() is None, within=60)
        yield service
    finally:
        await service.stop()


async def read_events(settings: Settings, deliveries: set[str], within: float = 30.0,
                      *, bus: Bus | None = None) -> dict[str, tuple[bytes, PushEvent]]:
    """Read the push topic (through ``bus``, default the settings' own) until every
    delivery id is found."""
    found: dict[str, tuple[bytes, PushEvent]] = {}
    async with bus_for(settings, bus) as the_bus, asyncio.timeout(within):
        while True:
            for record in await the_bus.read_topic(settings.push_topic, max_wait=within):
                event = decode_push(record.value)
                if event.delivery is not None:
                    found[event.delivery] = (record.key or b"", event)
            if deliveries <= set(found):
                return found
            await asyncio.sleep(0.2)  # polling the topic's contents


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)


# ---- tests ------------------------------------------------------------------

@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


async def post(http: ClientSession, service: IngressService, path: str,
               data: Any = None) -> tuple[int, Any, Any]:
    body = dumps(PAYLOAD) if data is None else data
    async with http.post(f"http://127.0.0.1:{service.port}{path}", data=body) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def project_with_receiver(kube: ApiClient, namespace: str, name: str = "quay-push",
                                secret: str = "s3cr3t") -> str:
    await put_secret(kube, namespace, "quay-secret", {"secret": secret})
    await create_project_config(kube, namespace, [quay_receiver(name, "quay-secret")])
    return expected_path(namespace, name, secret)


async def test_push_lands_in_the_topic(settings: Settings, kube: ApiClient, namespace: str,
                                       http: ClientSession, bus: Bus) -> None:
    path = await project_with_receiver(kube, namespace)
    async with running_ingress(settings, bus=bus) as service:
        await eventually(lambda: service.registry.lookup(path), within=20)
        status, body, headers = await post(http, service, path)
        assert status == 202, body
        delivery = body["delivery"]
        assert body == {"msg": "accepted", "delivery": delivery}
        assert headers["X-Pushrelay-Delivery"] == delivery
        test_note = dict(PAYLOAD, updated_tags=["latest", "foo"], pruned_image_count=3)
        status, body2, _ = await post(http, service, path, dumps(test_note))
        assert status == 202
    events = await read_events(settings, {delivery, body2["delivery"]}, bus=bus)
    key, event = events[delivery]
    assert key == b"quay.io/mynamespace/repository"
    assert event.scope.project == namespace and event.receiver == "quay-push"
    assert event.repository == "quay.io/mynamespace/repository"
    assert event.repo_urls == ["quay.io/mynamespace/repository"]
    assert event.tags == ["latest"] and event.source == "quay"
    assert events[body2["delivery"]][1].tags == ["latest", "foo"]


async def test_error_statuses(bus: Bus, settings: Settings, kube: ApiClient, namespace: str,
                              http: ClientSession) -> None:
    path = await project_with_receiver(kube, namespace)
    async with running_ingress(settings, bus=bus) as service:
        await eventually(lambda: service.registry.lookup(path), within=20)
        base = f"http://127.0.0.1:{service.port}"
        for bad in (b"{not json", b"[]", dumps({"updated_tags": ["x"]}),
                    dumps({"docker_url": 1}), dumps(dict(PAYLOAD, updated_tags="latest"))):
            assert (await post(http, service, path, bad))[:2] == (
                400, {"error": "invalid request body"})
        unknown = [expected_path(namespace, "quay-push", "wrong"), "/quay/xyz", "/quay/",
                   path.upper(), path + "/x"]
        for other in unknown:
            assert (await post(http, service, other))[:2] == (404, {"error": "not found"})
        async with http.get(base + path) as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "POST"
        too_big = dumps(PAYLOAD) + b" " * (2 * 1024 * 1024)
        status, body, _ = await post(http, service, path, too_big)
        assert status == 413

        async def chunked() -> AsyncIterator[bytes]:
            yield b'{"docker_url": "quay.io/a/b", "updated_tags": ["x"], "pad": "'
            for _ in range(36):  # > 2 MiB in chunks, no Content-Length
                yield b"p" * 65536
            yield b'"}'

        async with http.post(base + path, data=chunked()) as resp:
            assert resp.status == 413
            assert "Content-Length" not in resp.request_info.headers
        async with http.get(base + "/no-such-route") as resp:
            unknown = resp.status, await resp.read()
        assert unknown[0] == 404
        health = f"http://127.0.0.1:{service.health_port}"
        for route in ("/readyz", "/metrics", "/openapi.json"):
            async with http.get(base + route) as resp:  # the public port: not there
                assert (resp.status, await resp.read()) == unknown, route
        for route in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            async with http.get(health + route) as resp:
                assert resp.status == 200, route
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200
        status, sentinel, _ = await post(http, service, path)
        assert status == 202
    # Nothing but the sentinel reached the topic.
    events = await read_events(settings, {sentinel["delivery"]}, bus=bus)
    assert set(events) == {sentinel["delivery"]}


async def test_secret_rotation_is_live(settings: Settings, kube: ApiClient, namespace: str,
                                       http: ClientSession, bus: Bus) -> None:
    old = await project_with_receiver(kube, namespace, secret="before")
    new = expected_path(namespace, "quay-push", "after")
    async with running_ingress(settings, bus=bus) as service:
        await eventually(lambda: service.registry.lookup(old), within=20)
        assert (await post(http, service, old))[0] == 202
        await put_secret(kube, namespace, "quay-secret", {"secret": "after"})
        await eventually(lambda: service.registry.lookup(new), within=20)
        assert (await post(http, service, old))[0] == 404
        status, body, _ = await post(http, service, new)
        assert status == 202

        async def status_path() -> Any:
            got = await get_project_config(kube, namespace)
            receivers = (got.get("status") or {}).get("webhookReceivers") or []
            return receivers and receivers[0]["path"] == new
        await eventually(status_path, within=20)
    await read_events(settings, {body["delivery"]}, bus=bus)


async def events_for(kube: ApiClient, namespace: str) -> list[dict[str, Any]]:
    listing = await request_json(
        kube, "GET", f"/api/v1/namespaces/{namespace}/events",
        query=[("fieldSelector", f"involvedObject.name={namespace}")])
    return list(listing.get("items") or [])


async def test_missing_secret_or_key_leaves_only_that_receiver_unserved(
    bus: Bus, settings: Settings, kube: ApiClient, namespace: str, http: ClientSession,
) -> None:
    await put_secret(kube, namespace, "good", {"secret": "g"})
    await put_secret(kube, namespace, "nokey", {"token": "t"})
    await create_project_config(kube, namespace, [
        quay_receiver("ok", "good"), quay_receiver("gone", "absent"),
        quay_receiver("keyless", "nokey"),
    ])
    ok = expected_path(namespace, "ok", "g")
    async with running_ingress(settings, bus=bus) as service:
        await eventually(lambda: service.registry.lookup(ok), within=20)
        assert (await post(http, service, ok))[0] == 202
        unserved = {u.name: u.reason for u in service.registry.unserved
                    if u.owner.namespace == namespace}
        assert unserved == {"gone": f"Secret {namespace}/absent not found",
                            "keyless": f"Secret {namespace}/nokey has no 'secret' data key"}

        async def ready_false() -> Any:
            status = (await get_project_config(kube, namespace)).get("status") or {}
            ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
            names = [r["name"] for r in status.get("webhookReceivers") or []]
            return ready and ready[0]["status"] == "False" and names == ["ok"] and ready[0]
        ready = await eventually(ready_false, within=20)
        assert "absent not found" in ready["message"] and "'keyless'" in ready["message"]

        async def warned() -> Any:
            found = [e for e in await events_for(kube, namespace)
                     if e["reason"] == "WebhookReceiverUnserved"]
            return len(found) == 2 and found
        warnings = await eventually(warned, within=30)
        assert all(e["type"] == "Warning" and e["count"] == 1 for e in warnings)
        assert all(e["involvedObject"]["kind"] == "ProjectConfig" for e in warnings)

        # Creating the Secret serves the receiver, without a restart.
        await put_secret(kube, namespace, "absent", {"secret": "late"})
        late = expected_path(namespace, "gone", "late")
        await eventually(lambda: service.registry.lookup(late), within=20)
        assert (await post(http, service, late))[0] == 202
        # Reported once per change: the old warning was not repeated.
        await asyncio.sleep(6)
        counts = [e["count"] for e in await events_for(kube, namespace)
                  if e["reason"] == "WebhookReceiverUnserved"]
        assert counts == [1, 1]


async def test_status_is_written_once_and_left_alone(
    bus: Bus, settings: Settings, kube: ApiClient, namespace: str,
) -> None:
    path = await project_with_receiver(kube, namespace, name="r", secret="x")
    async with running_ingress(settings, bus=bus) as service:
        async def written() -> Any:
            got = await get_project_config(kube, namespace)
            return (got.get("status") or {}).get("webhookReceivers") and got
        got = await eventually(written, within=20)
        assert got["status"]["webhookReceivers"] == [
            {"name": "r", "path": path, "url": settings.base_url + path}]
        version = got["metadata"]["resourceVersion"]
        # Neither rebuilds (other tests' objects, an unrelated Secret) nor time rewrite it.
        await put_secret(kube, namespace, "unrelated", {"secret": "z"})
        await asyncio.sleep(3)
        assert service.registry.lookup(path) is not None
        assert (await get_project_config(kube, namespace))["metadata"]["resourceVersion"] \
            == version


async def test_status_not_written_when_disabled(
    bus: Bus, devstack_env: dict[str, str], topic_prefix: str, kube: ApiClient, namespace: str,
) -> None:
    settings = make_settings(devstack_env, topic_prefix, write_status=False)
    path = await project_with_receiver(kube, namespace)
    async with running_ingress(settings, bus=bus) as service:
        await eventually(lambda: service.registry.lookup(path), within=20)
        await asyncio.sleep(1)
    assert "status" not in await get_project_config(kube, namespace)


async def test_cluster_config_receiver(bus: Bus, settings: Settings, kube: ApiClient,
                                       http: ClientSession) -> None:
    secret_ns = settings.system_resources_namespace
    try:  # a devstack started by an older pushrelay may not have it yet
        await request_json(kube, "POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": secret_ns}})
    except KubeError as exc:
        if exc.status != 409:
            raise
    suffix = uuid.uuid4().hex[:8]
    name, secret_name, secret = f"cluster-quay-{suffix}", f"quay-{suffix}", f"cs-{suffix}"
    await put_secret(kube, secret_ns, secret_name, {"secret": secret})
    created = await add_cluster_receiver(kube, quay_receiver(name, secret_name))
    path = expected_path("", name, secret)  # project "" for ClusterConfig receivers
    try:
        async with running_ingress(settings, bus=bus) as service:
            receiver = await eventually(lambda: service.registry.lookup(path), within=20)
            assert receiver.project is None and receiver.secret_namespace == secret_ns
            status, body, _ = await post(http, service, path)
            assert status == 202
    finally:
        await remove_cluster_receiver(kube, name, delete_if_empty=created)
        await request_json(kube, "DELETE", SECRET.path(secret_ns, secret_name))
    _, event = (await read_events(settings, {body["delivery"]}, bus=bus))[body["delivery"]]
    assert event.scope.project is None and event.receiver == name


async def add_cluster_receiver(kube: ApiClient, receiver: dict[str, Any]) -> bool:
    """Add a receiver to the shared ClusterConfig; True when this call created it."""
    for _ in range(10):
        try:
            current = await request_json(kube, "GET", CLUSTER_CONFIG.path(None, "cluster"))
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": CLUSTER_CONFIG.api_version, "kind": "ClusterConfig",
                    "metadata": {"name": "cluster"}, "spec": {"webhookReceivers": [receiver]}}
            try:
                await request_json(kube, "POST", CLUSTER_CONFIG.path(), body=body)
                return True
            except KubeError as again:
                if again.status != 409:
                    raise
                continue
        spec = current.setdefault("spec", {})
        spec["webhookReceivers"] = [*(spec.get("webhookReceivers") or []), receiver]
        try:  # optimistic concurrency: the PUT carries the resourceVersion we read
            await request_json(kube, "PUT", CLUSTER_CONFIG.path(None, "cluster"), body=current)
            return False
        except KubeError as exc:
            if exc.status != 409:
                raise
    raise AssertionError("could not update the ClusterConfig")


async def remove_cluster_receiver(kube: ApiClient, name: str, delete_if_empty: bool) -> None:
    for _ in range(10):
        current = await request_json(kube, "GET", CLUSTER_CONFIG.path(None, "cluster"))
        spec = current.setdefault("spec", {})
        rest = [r for r in spec.get("webhookReceivers") or [] if r.get("name") != name]
        try:
            if not rest and delete_if_empty:
                await request_json(kube, "DELETE", CLUSTER_CONFIG.path(None, "cluster"))
            else:
                spec["webhookReceivers"] = rest
                await request_json(kube, "PUT", CLUSTER_CONFIG.path(None, "cluster"),
                                   body=current)
            return
        except KubeError as exc:
            if exc.status != 409:
                raise


async def test_graceful_stop_finishes_in_flight_requests(
    bus: Bus, settings: Settings, kube: ApiClient, namespace: str, http: ClientSession,
) -> None:
    path = await project_with_receiver(kube, namespace)
    service = create(settings, bus=bus)
    await service.start()
    try:
        await eventually(lambda: service.readiness() is None, within=60)
        await eventually(lambda: service.registry.lookup(path), within=20)
        port = service.port
        body_sent = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            raw = dumps(PAYLOAD)
            yield raw[:10]
            body_sent.set()
            await asyncio.sleep(1.0)  # stop() is called meanwhile
            yield raw[10:]

        async def in_flight() -> tuple[int, Any]:
            async with http.post(f"http://127.0.0.1:{port}{path}", data=slow_body()) as resp:
                return resp.status, await resp.json()

        request = asyncio.create_task(in_flight())
        await body_sent.wait()
        await asyncio.sleep(0.2)
        stopping = asyncio.create_task(service.stop())
        status, body = await request
        await stopping
        assert status == 202
        with pytest.raises(OSError):  # no longer accepting
            await asyncio.open_connection("127.0.0.1", port)
        await service.stop()  # idempotent
    finally:
        await service.stop()
    await read_events(settings, {body["delivery"]}, bus=bus)


def self_signed(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_tls(bus: Bus, devstack_env: dict[str, str], topic_prefix: str, kube: ApiClient,
                   namespace: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = make_settings(devstack_env, topic_prefix, tls_cert=cert, tls_key=key)
    path = await project_with_receiver(kube, namespace)
    context = ssl.create_default_context(cafile=cert)
    async with ClientSession() as http, running_ingress(settings, bus=bus) as service:
        await eventually(lambda: service.registry.lookup(path), within=20)
        url = f"https://127.0.0.1:{service.port}{path}"
        async with http.post(url, data=dumps(PAYLOAD), ssl=context) as resp:
            assert resp.status == 202
        with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
            async with http.post(url.replace("https", "http"), data=dumps(PAYLOAD)):
                pass
