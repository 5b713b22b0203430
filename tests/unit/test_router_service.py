"""Router pieces that need no broker: record → outgoing messages, reporting once."""

from __future__ import annotations

from typing import Any, cast

import orjson

from pushrelay.core.events import PushEvent, Scope, decode_dead_letter, decode_refresh, encode
from pushrelay.infra.bus.api import (
    BusTimeout,
    BusUnavailable,
    Record,
    RecordRejected,
    TopicPartition,
)
from pushrelay.infra.kube.events import EventRecorder
from pushrelay.infra.settings import RouterSettings
from router.index import INVALID_REASON, LiveIndex, trim
from router.routing import MAX_CAUSE_TAGS, Outgoing, route_batch
from router.service import RouterService
from tests.unit.test_router_index import Counter, image, wh

URL = "quay.io/ns/repo"


def record(value: bytes | None, offset: int = 0) -> Record:
    # A None value (a Kafka tombstone) arrives as b"" through the Kafka bus.
    return Record(topic="pushrelay.push-events", partition=0, offset=offset, key=b"k",
                  value=value if value is not None else b"", timestamp=0.0)


def service() -> RouterService:
    svc = RouterService(RouterSettings(), compiler=Counter())
    svc.live = LiveIndex(cast(Any, None), compiler=Counter())
    for obj in (wh("a", "w1", image(URL)), wh("b", "w2", image(URL, ["v1"]))):
        svc.live._on_change("ADDED", obj)
    return svc


def routed(records: list[Record]) -> list[Outgoing]:
    svc = service()
    assert svc.live is not None
    return route_batch(svc.live.index, records)[0]


def decode_push_value(raw: bytes) -> PushEvent:
    return PushEvent.model_validate_json(raw)


def push(project: str | None, tags: list[str], url: str = URL) -> bytes:
    return encode(PushEvent(repository=url, repo_urls=[url], tags=tags, delivery="d1",
                            scope=Scope(project=project)))


def test_route_batch_requests_and_dead_letters() -> None:
    svc = service()
    assert svc.live is not None
    raw = [push(None, ["v1"]), push("a", ["v2"]), b"not json", b"[]",
           orjson.dumps({"schema": "pushrelay.push/v9"}), None,
           orjson.dumps({"schema": "pushrelay.push/v1", "repository": "x",
                         "repo_urls": ["x"], "tags": "v1"})]
    batch = {TopicPartition("t", 0): [record(v, i) for i, v in enumerate(raw)]}
    out, facts = svc._route(batch)
    requests = [decode_refresh(m.value) for m in out if not m.dead_letter]
    letters = [decode_dead_letter(m.value) for m in out if m.dead_letter]
    assert sorted(str(r.warehouse) for r in requests) == ["a/w1", "a/w1", "b/w2"]
    assert all(m.key == str(decode_refresh(m.value).warehouse).encode()
               for m in out if not m.dead_letter)
    assert requests[0].cause.delivery == "d1" and requests[0].cause.repo_url == URL
    # the push's receipt travels along: the end-to-end latency is measured from it
    assert requests[0].cause.received_at == decode_push_value(raw[0]).received_at
    assert [d.offset for d in letters] == [2, 3, 4, 5, 6]
    assert "not JSON" in letters[0].reason
    assert "unknown schema" in letters[2].reason
    assert "tags" in letters[4].reason
    assert all(d.stage == "router" for d in letters)
    assert svc.events == 7
    # delivery visibility: one "matched" fact per delivery
    assert [(f.stage, f.outcome, f.delivery) for f in facts] == [("router", "matched", "d1")] * 2
    assert facts[0].warehouses == ["a/w1", "b/w2"] and facts[1].warehouses == ["a/w1"]


def test_unnormalized_producer_urls_still_match() -> None:
    raw = encode(PushEvent(repository="Quay.io/NS/Repo:v1", repo_urls=["QUAY.IO/ns/repo"],
                           tags=["v1"]))
    out = routed([record(raw)])
    assert len(out) == 2


def test_cause_tags_are_capped() -> None:
    tags = [f"t{i}" for i in range(MAX_CAUSE_TAGS * 3)]
    out = routed([record(push("a", tags))])
    assert len(decode_refresh(out[0].value).cause.tags) == MAX_CAUSE_TAGS


def test_problems_reported_once_per_generation() -> None:
    recorder = EventRecorder(cast(Any, None), "test")
    live = LiveIndex(cast(Any, None), recorder=recorder, compiler=Counter())
    bad = wh("a", "bad", image(URL, allowTags="^v"), image(URL))
    live._on_change("ADDED", bad)
    live._on_change("MODIFIED", bad)  # e.g. a status update: same generation
    assert live.reported == 1
    (pending,) = recorder._entries.values()
    assert pending.reason == INVALID_REASON and pending.type == "Warning"
    assert pending.count == 1 and pending.ref.name == "bad"
    live._on_change("MODIFIED", wh("a", "bad", image(URL, allowTags="^v"), gen=2))
    assert live.reported == 2
    live._on_change("DELETED", bad)
    assert len(live.index) == 0


async def test_stop_is_idempotent_before_start() -> None:
    svc = RouterService(RouterSettings(), compiler=Counter())
    await svc.stop()
    await svc.stop()
    assert svc.readiness() is not None


def test_trim_keeps_what_routing_needs() -> None:
    obj = wh("a", "w", image(URL))
    obj["metadata"]["managedFields"] = [{"big": "x" * 1000}]
    obj["status"] = {"lastFreight": "x" * 1000}
    small = trim(obj)
    assert small["spec"] == obj["spec"]
    assert set(small["metadata"]) == {"namespace", "name", "uid", "generation"}
    assert trim({"metadata": None, "spec": "junk"}) == {"metadata": {},
                                                       "spec": {"subscriptions": []}}


async def test_missing_acks_become_retriable_timeouts() -> None:
    """The watchdog over sends: an ack that never comes is a retriable failure, not a hang."""
    import asyncio

    from router.service import _permanent

    svc = service()
    svc._ack_timeout = 0.05
    loop = asyncio.get_running_loop()
    acked, failed, hung = loop.create_future(), loop.create_future(), loop.create_future()
    acked.set_result("metadata")
    failed.set_exception(BusTimeout("broker"))
    results = await svc._acks([acked, failed, hung])
    assert results[0] == "metadata"
    assert isinstance(results[1], BusTimeout) and isinstance(results[2], BusTimeout)
    assert not hung.cancelled()
    # retried, never dead-lettered: the message may be taken on the next attempt
    assert not _permanent(results[2])
    assert _permanent(RecordRejected("too large")) and not _permanent(BusUnavailable("down"))
    assert not _permanent(RuntimeError("a bug"))  # not the bus's word: retried, not dropped


async def test_facts_leave_with_the_batch_and_offsets_wait_only_for_requests() -> None:
    """One produce request per batch: the delivery facts are enqueued in the same
    turn as the refresh requests (before any ack is awaited); a fact that fails
    is counted, the batch is still delivered."""
    import asyncio

    from pushrelay.infra.deliveries import DeliveryLog

    svc = service()
    loop = asyncio.get_running_loop()
    sent: list[str] = []
    acks: list[asyncio.Future[None]] = []

    class Producer:
        async def send(self, topic: str, value: bytes, key: bytes | None = None,
                       partition: int | None = None) -> asyncio.Future[None]:
            sent.append(topic)
            future: asyncio.Future[None] = loop.create_future()
            if topic == svc.settings.deliveries_topic:
                future.set_exception(BusUnavailable("facts are best effort"))
            else:
                acks.append(future)
            return future

        async def partitions(self, topic: str) -> list[int]:
            return [0, 1]

    producer = Producer()
    svc._producer = cast(Any, producer)
    svc._deliveries = DeliveryLog(lambda: cast(Any, producer), svc.settings)
    out, facts = svc._route({TopicPartition("t", 0): [record(push(None, ["v1"]))]})
    delivering = asyncio.create_task(svc._deliver(out, facts))
    await asyncio.sleep(0)  # _deliver runs up to its first wait for acks
    assert sent == [svc.settings.refresh_topic] * 2 + [svc.settings.deliveries_topic]
    assert not delivering.done()  # the offsets wait for the requests' acks
    for ack in acks:
        ack.set_result(None)
    assert await delivering is True
    assert svc.requests == 2 and svc._deliveries.dropped == 1
    assert sent.count(svc.settings.deliveries_topic) == 1  # facts never re-sent
