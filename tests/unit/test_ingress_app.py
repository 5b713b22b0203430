"""The HTTP contract (docs/contracts.md, "Ingress HTTP"), on the real aiohttp app with stand-ins for
the registry and Kafka (the integration tests run it against the real ones)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web

from ingress.app import DELIVERY_HEADER, SPOOLED_HEADER, WebhookHandler, build_app
from ingress.openapi import openapi_route
from ingress.service import LINGERING_TIME
from ingress.spool import Spooled
from pushrelay.core.deliveries import DeliveryFact
from pushrelay.core.events import PushEvent
from pushrelay.core.receivers import Owner, Receiver, receiver_path
from pushrelay.infra.lifecycle import ServiceBase
from pushrelay.infra.runtime import HealthServer
from pushrelay.infra.settings import IngressSettings

SECRET = "s3cr3t-value"
PATH = receiver_path("/", "proj", "recv", SECRET)
HASH = hashlib.sha256(b"projrecv" + SECRET.encode()).hexdigest()
PAYLOAD = {"docker_url": "quay.io/mynamespace/repository", "updated_tags": ["latest"],
           "name": "repository", "namespace": "mynamespace"}


class PublishFailed(Exception):
    pass


class FakeReceivers:
    def __init__(self) -> None:
        owner = Owner("ProjectConfig", "proj", "proj")
        self.table = {PATH: Receiver(owner, "recv", "proj", "sec", PATH, "http://h" + PATH)}
        self.not_ready: str | None = None

    def lookup(self, path: str) -> Receiver | None:
        return self.table.get(path)

    def readiness(self) -> str | None:
        return self.not_ready


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[PushEvent] = []
        self.fail = False
        self.spooled: Spooled | None = None

    async def publish(self, event: PushEvent) -> Spooled | None:
        if self.fail:
            raise PublishFailed("broker down")
        self.events.append(event)
        return self.spooled


class Harness:
    def __init__(self, session: ClientSession, base: str, handler: WebhookHandler,
                 receivers: FakeReceivers, publisher: FakePublisher,
                 facts: list[DeliveryFact], port: int) -> None:
        self.session, self.base, self.handler = session, base, handler
        self.receivers, self.publisher, self.facts, self.port = receivers, publisher, facts, port

    async def post(self, path: str, data: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        if data is None:
            data = orjson.dumps(PAYLOAD)
        async with self.session.post(self.base + path, data=data, **kw) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    settings = IngressSettings(max_body_bytes=2 * 1024 * 1024, read_timeout=0.5,
                               retry_after=30)
    receivers, publisher, facts = FakeReceivers(), FakePublisher(), []
    handler = WebhookHandler(settings, receivers, publisher,
                             on_delivery=lambda fact, _: facts.append(fact),
                             publish_error=PublishFailed)
    runner = web.AppRunner(build_app(settings, handler, []), access_log=None,
                           lingering_time=LINGERING_TIME)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with ClientSession() as session:
        yield Harness(session, f"http://127.0.0.1:{port}", handler, receivers, publisher,
                      facts, port)
    await runner.cleanup()


async def test_accepted_after_publish(harness: Harness) -> None:
    status, body, headers = await harness.post(PATH)
    assert status == 202
    assert body == {"msg": "accepted", "delivery": headers[DELIVERY_HEADER]}
    assert headers["Content-Type"].startswith("application/json")
    [event] = harness.publisher.events
    assert event.delivery == body["delivery"] and event.receiver == "recv"
    assert event.scope.project == "proj" and event.tags == ["latest"]
    assert event.repo_urls == ["quay.io/mynamespace/repository"]
    [fact] = harness.facts
    assert (fact.outcome, fact.delivery, fact.receiver) == ("accepted", body["delivery"], "recv")


async def test_test_notification_and_missing_tags(harness: Harness) -> None:
    test = dict(PAYLOAD, updated_tags=["latest", "foo"], pruned_image_count=3)
    assert (await harness.post(PATH, orjson.dumps(test)))[0] == 202
    assert harness.facts[-1].test_notification
    no_tags = {"docker_url": "quay.io/a/b"}
    assert (await harness.post(PATH, orjson.dumps(no_tags)))[0] == 202
    assert harness.publisher.events[-1].tags == []


@pytest.mark.parametrize("raw", [
    b"", b"{", b"[1]", b"null", b'{"updated_tags":["x"]}', b'{"docker_url":7}',
    b'{"docker_url":"q/a","updated_tags":"x"}', b'{"docker_url":"q/a","updated_tags":[1]}',
    b"\xff\xfe\x00",
])
async def test_invalid_body(harness: Harness, raw: bytes) -> None:
    status, body, _ = await harness.post(PATH, raw)
    assert (status, body) == (400, {"error": "invalid request body"})
    assert not harness.publisher.events
    assert harness.facts[-1].outcome == "rejected"


async def test_not_found_is_the_same_for_every_unknown_path(harness: Harness) -> None:
    answers = set()
    for path in ["/quay/" + "0" * 64, "/quay/" + HASH[:-1] + "0", "/quay/short", "/quay/%00",
                 "/quay/" + HASH.upper(), "/", "/quay", "/quay/", PATH + "/", "/x" + PATH]:
        status, body, _ = await harness.post(path)
        answers.add((status, orjson.dumps(body)))
    assert answers == {(404, b'{"error":"not found"}')}
    # An unknown path does not read (or limit) the body.
    status, _, _ = await harness.post("/quay/" + "0" * 64, b"x" * (3 * 1024 * 1024))
    assert status == 404
    assert not harness.facts


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_method_not_allowed_only_on_a_served_receiver_path(harness: Harness,
                                                                 method: str) -> None:
    async with harness.session.request(method, harness.base + PATH) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert await resp.json() == {"error": "method not allowed"}
    async with harness.session.head(harness.base + PATH) as resp:
        assert resp.status == 405


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_unknown_receiver_paths_are_404_whatever_the_method(harness: Harness,
                                                                  method: str) -> None:
    answers = set()
    for path in ("/quay/" + "0" * 64, "/quay/" + HASH[:-1] + "0", "/quay/short",
                 "/quay/" + HASH.upper(), "/quay/", "/elsewhere"):
        async with harness.session.request(method, harness.base + path) as resp:
            answers.add((resp.status, "Allow" in resp.headers, await resp.read()))
    expected = b"" if method == "HEAD" else b'{"error": "not found"}'
    assert answers == {(404, False, expected)}


async def test_too_large_from_content_length(harness: Harness) -> None:
    limit = 2 * 1024 * 1024
    padded = orjson.dumps(PAYLOAD) + b" " * (limit - len(orjson.dumps(PAYLOAD)))
    assert (await harness.post(PATH, padded))[0] == 202  # exactly the limit is fine
    status, body, _ = await harness.post(PATH, padded + b" ")
    assert status == 413 and "exceeds" in body["error"]


async def test_too_large_while_reading_a_chunked_body(harness: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"docker_url": "quay.io/a/b", "pad": "'
        for _ in range(40):  # 2.5 MiB, no Content-Length
            yield b"x" * 65536
        yield b'"}'

    status, body, _ = await harness.post(PATH, chunks())
    assert status == 413 and "exceeds" in body["error"]
    assert not harness.publisher.events


async def test_slow_body_times_out(harness: Harness) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 100\r\n\r\n{\"docker".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408")


async def test_unavailable_when_not_ready_or_publish_fails(harness: Harness) -> None:
    harness.receivers.not_ready = "listing secrets"
    status, body, headers = await harness.post(PATH)
    assert (status, headers["Retry-After"]) == (503, "30") and "error" in body
    harness.receivers.not_ready = None
    harness.publisher.fail = True
    status, body, headers = await harness.post(PATH)
    assert status == 503 and headers["Retry-After"] == "30" and "error" in body
    assert DELIVERY_HEADER not in headers
    assert harness.facts[-1].outcome == "failed"


async def test_spooled_is_the_same_202_with_a_header(harness: Harness) -> None:
    """The SPEC's 202 body is unchanged; the header and the delivery record say where."""
    status, _, headers = await harness.post(PATH)
    assert status == 202 and SPOOLED_HEADER not in headers
    harness.publisher.spooled = Spooled("timed out waiting for Kafka")
    status, body, headers = await harness.post(PATH)
    assert status == 202 and headers[SPOOLED_HEADER] == "true"
    assert body == {"msg": "accepted", "delivery": headers[DELIVERY_HEADER]}
    fact = harness.facts[-1]
    assert (fact.outcome, fact.delivery) == ("spooled", body["delivery"])
    assert fact.reason == "Kafka unavailable: timed out waiting for Kafka"
    assert fact.repository == PAYLOAD["docker_url"] and fact.tags == ["latest"]


async def test_delivery_hook_failure_does_not_fail_the_request(harness: Harness) -> None:
    def broken(_: DeliveryFact, __: object) -> None:
        raise RuntimeError("hook")

    harness.handler.on_delivery = broken
    assert (await harness.post(PATH))[0] == 202


async def test_a_bug_in_the_handler_is_a_logged_json_500_and_the_server_goes_on(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(_: PushEvent) -> None:
        raise RuntimeError("a bug")

    harness.publisher.publish = broken  # type: ignore[method-assign]
    status, body, headers = await harness.post(PATH)
    assert (status, body, headers["Server"]) == (500, {"error": "internal error"}, "pushrelay")
    assert any(r.getMessage() == "internal error" and r.exc_info for r in caplog.records)
    del harness.publisher.publish  # the class's own again
    assert (await harness.post(PATH))[0] == 202


async def test_every_public_answer_names_no_library_version(harness: Harness) -> None:
    harness.publisher.spooled = None
    answers = [await harness.post(PATH), await harness.post(PATH, b"{"),
               await harness.post("/no-such-path"), await harness.post(PATH[:-1] + "0")]
    async with harness.session.get(harness.base + PATH) as resp:
        answers.append((resp.status, None, resp.headers))
    async with harness.session.get(harness.base + "/healthz") as resp:
        answers.append((resp.status, None, resp.headers))
    assert [status for status, _, _ in answers] == [202, 400, 404, 404, 405, 200]
    assert {headers["Server"] for _, _, headers in answers} == {"pushrelay"}


async def test_random_bodies_never_get_a_server_error(harness: Harness) -> None:
    rng = random.Random(7)
    samples: list[bytes] = [bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
                            for _ in range(40)]
    pieces = [b"{", b"}", b"[", b"]", b'"docker_url"', b":", b",", b'"updated_tags"', b"null",
              b"1e999", b'"\\ud800"', b'"q/a"', b"[]", b"true"]
    samples += [b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
                for _ in range(80)]
    for raw in samples:
        status, body, _ = await harness.post(PATH, raw)
        assert status in (202, 400), (raw, status, body)


async def test_logs_carry_no_secret_or_full_hash(harness: Harness,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await harness.post(PATH)
    await harness.post(PATH, b"{")
    await harness.post("/quay/" + "a" * 64)
    text = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "accepted push" in text and HASH[:8] in text
    assert HASH not in text and SECRET not in text and "a" * 64 not in text


ADMIN_PATHS = ("/readyz", "/metrics", "/openapi.json")


async def test_public_port_serves_receivers_and_healthz_only(harness: Harness) -> None:
    async def answer(method: str, path: str) -> tuple[int, bytes, dict[str, str]]:
        async with harness.session.request(method, harness.base + path) as resp:
            headers = {k: v for k, v in resp.headers.items() if k != "Date"}
            return resp.status, await resp.read(), headers

    async with harness.session.get(harness.base + "/healthz") as resp:
        assert resp.status == 200
    for method in ("GET", "HEAD", "POST"):
        unknown = await answer(method, "/no-such-path")
        assert unknown[0] == 404
        for path in ADMIN_PATHS:
            assert await answer(method, path) == unknown, (method, path)


async def test_health_server_serves_readiness_metrics_and_openapi(harness: Harness) -> None:
    server = HealthServer([], "127.0.0.1", 0, [openapi_route(IngressSettings())])
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with harness.session.get(base + "/openapi.json") as resp:
            doc = await resp.json()
        assert "/quay/{hash}" in doc["paths"]
        for path in ("/healthz", "/readyz", "/metrics"):
            async with harness.session.get(base + path) as resp:
                assert resp.status == 200, path
        await harness.post(PATH)
        async with harness.session.get(base + "/metrics") as resp:
            text = await resp.text()
        assert "pushrelay_ingress_received_total" in text and HASH not in text
    finally:
        await server.stop()


class NoteService(ServiceBase):
    """A running service whose readiness and degraded note the test sets."""

    name = "ingress"

    def __init__(self) -> None:
        super().__init__(1.0)
        self.not_ready: str | None = None
        self.note: str | None = None

    def _readiness(self) -> str | None:
        return self.not_ready

    def _degraded(self) -> str | None:
        return self.note


async def test_readyz_stays_200_and_carries_the_degraded_note(harness: Harness) -> None:
    service = NoteService()
    await service.start()
    server = HealthServer([service], "127.0.0.1", 0)
    await server.start()

    async def readyz() -> tuple[int, Any]:
        async with harness.session.get(f"http://127.0.0.1:{server.port}/readyz") as resp:
            return resp.status, await resp.json()
    try:
        assert await readyz() == (200, {"status": "ready"})
        service.note = "spooling: Kafka unavailable (timed out); 120 events, oldest 35 s"
        assert await readyz() == (200, {"status": "ready", "degraded": {
            "ingress": "spooling: Kafka unavailable (timed out); 120 events, oldest 35 s"}})
        service.not_ready = "producer not connected; spool full: 1 of 1 bytes used"
        status, body = await readyz()
        assert status == 503 and "degraded" not in body
        assert body["reasons"] == {"ingress": service.not_ready}
    finally:
        await server.stop()
        await service.stop()
    assert service.degraded() is None  # only a running service is degraded


def test_tune_gc_raises_default_thresholds_only() -> None:
    import gc

    from pushrelay.infra.runtime import GC_THRESHOLDS, tune_gc
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        gc.set_threshold(1234, 5, 5)  # someone tuned it: left alone
        tune_gc()
        assert gc.get_threshold() == (1234, 5, 5)
    finally:
        gc.set_threshold(*saved)
