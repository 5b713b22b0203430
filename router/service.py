"""The router service: push events in, refresh requests out (SPEC sections 5, 6).

One loop, batch by batch: ``getmany`` → route every record against the live
Warehouse index → send the refresh requests and dead letters → wait for every
broker ack → mark the batch's offsets done. Done offsets are committed at most
every ``COMMIT_INTERVAL`` (and at once when the topic goes idle, on a
rebalance and at shutdown): a commit per batch was one broker write per few
events. An offset is never committed before its effects are durable, so a
crash at any point re-delivers (at most that interval of events; duplicates
are harmless downstream; loss is impossible).

Several routers share the push-events partitions through one consumer group.
On a rebalance, revocation waits for the batch in flight to be acknowledged
and commits what is done (:class:`_Handoff`), so a hand-over produces no
duplicates in the common case. The consumer joins the group only after the index has been
listed: an empty index would silently route events to nobody.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
)
from kubernetes_asyncio.client import ApiClient

from pushrelay import metrics
from pushrelay.bus import (
    dead_letter_for,
    ensure_topics,
    new_consumer,
    new_producer,
    watchdog_timeout,
)
from pushrelay.deliveries import DeliveryFact, DeliveryLog
from pushrelay.events import (
    Cause,
    InvalidEvent,
    PushEvent,
    RefreshRequest,
    WarehouseRef,
    decode_push,
    encode,
    new_id,
    now,
)
from pushrelay.kube.client import new_api_client
from pushrelay.kube.events import EventRecorder
from pushrelay.matching import Compiler, event_urls, miss, route
from pushrelay.runtime import Service
from pushrelay.settings import RouterSettings
from router.index import LiveIndex

log = logging.getLogger(__name__)

STAGE = "router"
POLL_MS = 250
COMMIT_INTERVAL = 1.0  # s
BATCH_RECORDS = 1000
#: Tags carried in one refresh request's cause (the rest only make it bigger).
MAX_CAUSE_TAGS = 100
#: Warehouse names kept in one delivery fact ("matched N" still counts them all).
MAX_FACT_WAREHOUSES = 1000


@dataclass(slots=True)
class _Outgoing:
    topic: str
    value: bytes
    key: bytes
    dead_letter: bool


class _Handoff(ConsumerRebalanceListener):
    """Revocation waits for the batch in flight to be acked, then commits what is done."""

    def __init__(self, commit_done: Callable[[], Awaitable[None]]) -> None:
        self._commit_done = commit_done

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._commit_done()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("push-events partitions assigned",
                 extra={"partitions": sorted(tp.partition for tp in assigned)})


class RouterService:
    name = "router"

    def __init__(self, settings: RouterSettings, *, compiler: Compiler | None = None) -> None:
        self.settings = settings
        self.crashed = asyncio.Event()
        self._compiler = compiler
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        # Watchdog over Kafka calls made under the lock (aiokafka has its own timeouts).
        self._ack_timeout = watchdog_timeout(settings)
        self._api: ApiClient | None = None
        self._recorder: EventRecorder | None = None
        self.live: LiveIndex | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._deliveries: DeliveryLog | None = None
        self._facts: list[DeliveryFact] = []  # of the batch in flight
        self._done: dict[TopicPartition, int] = {}  # durable, not yet committed
        self._commit_due = 0.0  # loop time of the next periodic commit
        self._task: asyncio.Task[None] | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self.events = 0  # push events consumed (valid or not)
        self.requests = 0  # refresh requests acknowledged
        self.dead_letters = 0  # dead letters acknowledged

    async def start(self) -> None:
        await ensure_topics(self.settings)
        self._api = await new_api_client(self.settings.kubeconfig)
        self._recorder = EventRecorder(self._api, "pushrelay-router",
                                       max_rate=self.settings.event_qps)
        await self._recorder.start()
        self.live = LiveIndex(self._api, recorder=self._recorder, compiler=self._compiler)
        await self.live.start()
        self._producer = new_producer(self.settings, client_id="pushrelay-router")
        await self._producer.start()
        self._deliveries = DeliveryLog(self._producer, self.settings)
        await self._deliveries.start()
        self._task = asyncio.create_task(self._run(), name="router:consume")

    def readiness(self) -> str | None:
        if self.live is None or not self.live.synced.is_set():
            error = self.live.last_error if self.live is not None else None
            return "warehouse index not synced" + (f": {error}" if error else "")
        if self._consumer is None:
            return "consumer not started"
        return None

    async def stop(self) -> None:
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._stop(), name="router:stop")
        await asyncio.shield(self._shutdown)

    async def _stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._deliveries is not None:
            await self._deliveries.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self.live is not None:
            await self.live.stop()
        if self._recorder is not None:
            await self._recorder.stop()
        if self._api is not None:
            await self._api.close()

    async def _run(self) -> None:
        try:
            assert self.live is not None
            synced = asyncio.create_task(self.live.synced.wait())
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({synced, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (synced, stopping):
                waiter.cancel()
            await asyncio.gather(synced, stopping, return_exceptions=True)
            if self._stopping.is_set():
                return
            self._consumer = new_consumer(
                self.settings, self.settings.push_topic, self.settings.router_group,
                client_id="pushrelay-router",
            )
            self._consumer.subscribe([self.settings.push_topic],
                                     listener=_Handoff(self._commit_done))
            await self._consumer.start()
            try:
                await self._consume(self._consumer)
            finally:
                await self._consumer.stop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("router crashed")
            self.crashed.set()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH_RECORDS)
            async with self._lock:
                if batch:
                    self._facts = []
                    if not await self._deliver(self._route_batch(batch)):
                        break  # stopping: the batch stays uncommitted
                    self._done.update({tp: records[-1].offset + 1
                                       for tp, records in batch.items() if records})
                    self._record_facts()
                if self._done and (not batch or loop.time() >= self._commit_due):
                    await self._commit(consumer)
        # Stopping: commit what is done, within a share of the shutdown budget (Kafka
        # may be the reason the last batch could not be delivered).
        await self._commit_done(self.settings.shutdown_timeout / 4)

    async def _commit_done(self, within: float | None = None) -> None:
        """Wait for the batch in flight, then commit every done offset."""
        async with self._lock:
            if self._consumer is not None:
                await self._commit(self._consumer, within)

    def _route_batch(self, batch: dict[TopicPartition, Sequence[Any]]) -> list[_Outgoing]:
        out: list[_Outgoing] = []
        for records in batch.values():
            for record in records:
                self.events += 1
                metrics.events_consumed.inc()
                try:
                    out += self._route_one(decode_push(record.value))
                except InvalidEvent as exc:
                    out.append(self._dead_letter(exc.reason, record))
                except Exception as exc:  # noqa: BLE001 - a bug must not stall the partition
                    log.exception("routing failed", extra={"offset": record.offset})
                    out.append(self._dead_letter(f"routing failed: {exc}", record))
        return out

    def _route_one(self, event: PushEvent) -> list[_Outgoing]:
        assert self.live is not None
        urls = event_urls(event.repo_urls, event.repository)
        matches = route(self.live.index, urls, event.tags, event.scope.project)
        metrics.events_matched.inc(len(matches))
        out = []
        for match in matches:
            # Every field is already valid (a decoded event, names from the API
            # server): build without re-validating, the hot path of the router.
            request = RefreshRequest.model_construct(
                id=new_id(), requested_at=now(),
                warehouse=WarehouseRef.model_construct(namespace=match.namespace,
                                                       name=match.name),
                cause=Cause.model_construct(
                    event=event.id, repo_url=match.repo_url,
                    tags=list(match.tags[:MAX_CAUSE_TAGS]), delivery=event.delivery,
                    received_at=event.received_at),
            )
            out.append(_Outgoing(self.settings.refresh_topic, encode(request), request.key,
                                 False))
        if event.delivery:
            # Nothing matched: say why (a second walk over the few subscriptions in scope).
            why = miss(self.live.index, urls, event.tags, event.scope.project) if not matches \
                else None
            self._facts.append(DeliveryFact(
                delivery=event.delivery, stage="router", outcome="matched",
                receiver=event.receiver, project=event.scope.project,
                repository=event.repository[:1024], tags=event.tags[:MAX_CAUSE_TAGS],
                warehouses=[f"{m.namespace}/{m.name}" for m in matches[:MAX_FACT_WAREHOUSES]],
                subscriptions=why.subscriptions if why else None,
                reason=why.reason[:1000] if why and why.reason else None,
            ))
        if matches or log.isEnabledFor(logging.DEBUG):
            log.log(logging.INFO if matches else logging.DEBUG, "routed push event", extra={
                "event": event.id, "delivery": event.delivery, "project": event.scope.project,
                "repository": event.repository[:256], "warehouses": len(matches)})
        return out

    def _record_facts(self) -> None:
        """Delivery visibility (best effort, after the batch is durable)."""
        if self._deliveries is not None:
            for fact in self._facts:
                self._deliveries.record(fact)
        self._facts = []

    def _dead_letter(self, reason: str, record: Any) -> _Outgoing:
        letter = dead_letter_for(STAGE, reason, record)
        log.warning("dead-lettering push event", extra={
            "reason": letter.reason, "partition": record.partition, "offset": record.offset})
        key = (letter.key or letter.id).encode()
        return _Outgoing(self.settings.dead_letter_topic, encode(letter), key, True)

    async def _deliver(self, pending: list[_Outgoing]) -> bool:
        """Send everything and wait for the acks, retrying what failed; False when
        stopping first (the batch is then left uncommitted, to be re-delivered)."""
        assert self._producer is not None
        delay, attempts = 0.1, 0
        while pending:
            sent = [(msg, await self._send(msg)) for msg in pending]
            results = await self._acks([f for _, f in sent])
            failed: list[_Outgoing] = []
            for (msg, _), result in zip(sent, results, strict=True):
                if not isinstance(result, BaseException):
                    self._acked(msg)
                elif _permanent(result) and not msg.dead_letter:
                    failed.append(self._unsendable(msg, cast(KafkaError, result)))
                elif _permanent(result):
                    log.error("dead letter cannot be produced; dropped",
                              extra={"error": repr(result)})
                else:
                    failed.append(msg)
            pending = failed
            if pending:
                attempts += 1
                if self._stopping.is_set() and attempts >= 3:
                    return False
                log.warning("retrying %d unacknowledged messages", len(pending))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        return True

    async def _acks(self, futures: list[asyncio.Future[Any]]) -> list[Any]:
        """Each send's result or exception, waiting at most the ack timeout.

        aiokafka bounds a send by its request timeout; this is the watchdog in
        case it does not: an ack still missing counts as a retriable failure
        (the message is sent again: a duplicate at worst, never a loss).
        """
        if futures:
            await asyncio.wait(futures, timeout=self._ack_timeout)
        return [
            (f.exception() or f.result()) if f.done() and not f.cancelled()
            else KafkaTimeoutError("no acknowledgement in time")
            for f in futures
        ]

    async def _send(self, msg: _Outgoing) -> asyncio.Future[Any]:
        assert self._producer is not None
        try:
            return await self._producer.send(msg.topic, msg.value, key=msg.key)
        except Exception as exc:  # noqa: BLE001 - surfaced through the future
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
            return future

    def _acked(self, msg: _Outgoing) -> None:
        if msg.dead_letter:
            self.dead_letters += 1
            metrics.dead_lettered.labels(STAGE).inc()
        else:
            self.requests += 1
            metrics.requests_produced.inc()

    def _unsendable(self, msg: _Outgoing, error: KafkaError) -> _Outgoing:
        """A refresh request Kafka will never take: keep it, as a dead letter."""
        letter = dead_letter_for(STAGE, f"refresh request not produced: {error!r}",
                                 payload=msg.value)
        return _Outgoing(self.settings.dead_letter_topic, encode(letter), msg.key, True)

    async def _commit(self, consumer: AIOKafkaConsumer, within: float | None = None) -> None:
        """Commit the offsets whose batches are durable (the next call retries a failure)."""
        offsets, self._done = self._done, {}
        self._commit_due = asyncio.get_running_loop().time() + COMMIT_INTERVAL
        if not offsets:
            return
        try:
            async with asyncio.timeout(self._ack_timeout if within is None
                                       else min(within, self._ack_timeout)):
                await consumer.commit(offsets)
        except TimeoutError:
            log.warning("commit timed out; retried with the next commit")
            self._keep(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions went to another member: it re-routes from the last commit.
            log.warning("commit refused after a rebalance; the new owner re-routes",
                        extra={"error": repr(exc)})
        except KafkaError as exc:
            log.warning("commit failed; retried with the next commit",
                        extra={"error": repr(exc)})
            self._keep(offsets)

    def _keep(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets not committed yet, merged under anything newer."""
        for tp, offset in offsets.items():
            self._done.setdefault(tp, offset)


def _permanent(error: BaseException) -> bool:
    """Kafka will never take this message (too large, bad topic, ...).

    aiokafka marks its timeouts not retriable, but a missing ack is exactly what
    must be retried: the message may well be taken on the next attempt.
    """
    return (isinstance(error, KafkaError) and not error.retriable
            and not isinstance(error, KafkaTimeoutError))


def create(settings: RouterSettings, health_services: Sequence[Service] | None = None,
           ) -> RouterService:
    """Entry point used by ``pushrelay router`` / ``python -m router``."""
    return RouterService(settings)
