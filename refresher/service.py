"""The refresher service: refresh-requests from Kafka to Warehouse patches.

One consumer-group member. The consume task tracks every record in the commit
watermark and hands decoded requests to the :class:`Engine`; invalid ones are
dead-lettered. A commit task commits each partition up to its lowest request
not yet satisfied. On a rebalance the revoked partitions are committed and
their pending requests forgotten (the next owner consumes them again).

Graceful stop: stop fetching, let in-flight patches finish (within 40% of the
shutdown budget; requests still waiting for their trailing window are handed
back uncommitted), commit the watermark, flush Events, close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.events import DeadLetter, InvalidEvent, decode_refresh
from pushrelay.infra import metrics
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.bus import (
    ensure_topics,
    new_consumer,
    new_producer,
    send_dead_letter,
    watchdog_timeout,
)
from pushrelay.infra.deliveries import DeliveryLog
from pushrelay.infra.kube.client import new_api_client
from pushrelay.infra.kube.events import EventRecorder
from pushrelay.infra.runtime import Service
from pushrelay.infra.settings import RefresherSettings
from refresher.bucket import TokenBucket
from refresher.engine import Engine, Item
from refresher.patcher import Patcher
from refresher.report import Reporter
from refresher.watermark import Watermarks

log = logging.getLogger(__name__)

COMPONENT = "pushrelay-refresher"


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: RefresherService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._service.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._service.assign(set(assigned))


class RefresherService:
    name = "refresher"

    def __init__(
        self, settings: RefresherSettings, *, commit_interval: float = 1.0,
        event_interval: float = 5.0, patch_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.crashed = asyncio.Event()
        self._concurrency = settings.refresh_concurrency
        self._max_outstanding = settings.refresh_max_outstanding
        self._commit_interval = commit_interval
        self._event_interval = event_interval
        self._patch_timeout = patch_timeout
        self.marks: Watermarks[TopicPartition] = Watermarks()
        self.bucket = TokenBucket(settings.refresh_qps, settings.refresh_burst)
        self._api: ApiClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._recorder: EventRecorder | None = None
        self._deliveries: DeliveryLog | None = None
        self.reporter: Reporter | None = None
        self.engine: Engine | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._stop_lock = asyncio.Lock()
        self._stopped = False

    # ---- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        await ensure_topics(s)
        self._api = await new_api_client(s.kubeconfig)
        self._producer = new_producer(s)
        await self._producer.start()
        self._recorder = EventRecorder(self._api, COMPONENT, interval=self._event_interval,
                                       max_rate=s.event_qps, acquire=self.bucket.acquire)
        await self._recorder.start()
        self._deliveries = DeliveryLog(self._producer, s)
        await self._deliveries.start()
        self.reporter = Reporter(self.marks, recorder=self._recorder,
                                 dead_letter=self._send_dead_letter,
                                 facts=self._deliveries.record)
        self.engine = Engine(
            refresh=Patcher(self._api, timeout=self._patch_timeout).refresh,
            sink=self.reporter, interval=s.refresh_min_interval, bucket=self.bucket,
            backoff=Backoff(max_delay=s.refresh_max_backoff), concurrency=self._concurrency,
        )
        self._own(self.engine.start())
        self._consumer = new_consumer(s, s.refresh_topic, s.refresher_group)
        self._consumer.subscribe([s.refresh_topic], listener=_Rebalance(self))
        await self._consumer.start()
        self._own(asyncio.create_task(self._consume(), name="refresher:consume"))
        self._own(asyncio.create_task(self._commit_loop(), name="refresher:commit"))
        self._running = True
        log.info("refresher started", extra={
            "topic": s.refresh_topic, "group": s.refresher_group, "qps": s.refresh_qps,
            "burst": s.refresh_burst, "min_interval": s.refresh_min_interval})

    async def stop(self) -> None:
        async with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self._running = False
            await self._shutdown()

    async def _shutdown(self) -> None:
        budget = self.settings.shutdown_timeout
        consume = [t for t in self._tasks if t.get_name() == "refresher:consume"]
        await _cancel(consume)  # 1. stop fetching
        if self.engine is not None:  # 2. finish in-flight patches, hand back the rest
            cancelled = await self.engine.stop(drain_timeout=budget * 0.4)
            if cancelled:
                log.warning("patches cancelled at shutdown; they will be redone",
                            extra={"cancelled": cancelled})
        await _cancel(self._tasks)
        if self._consumer is not None:  # 3. commit the watermark
            await self._commit()
        flushers = (("events", self._recorder, 0.25), ("delivery facts", self._deliveries, 0.1))
        for what, flusher, share in flushers:
            if flusher is not None:  # 4. flush Events and delivery facts (best effort)
                try:
                    async with asyncio.timeout(budget * share):
                        await flusher.stop()
                except TimeoutError:
                    log.warning("%s not flushed before shutdown", what)
        for closer in (self._consumer, self._producer):
            if closer is not None:
                try:
                    await closer.stop()
                except Exception:  # noqa: BLE001 - closing anyway
                    log.exception("error closing a Kafka client")
        if self._api is not None:
            await self._api.close()
        log.info("refresher stopped", extra={"outstanding": self.marks.outstanding()})

    def readiness(self) -> str | None:
        if self._stopped:
            return "stopping"
        if not self._running:
            return "starting"
        return None

    def _own(self, task: asyncio.Task[None]) -> None:
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopped:
            return
        exc = task.exception()
        log.error("background task ended", exc_info=exc, extra={"task": task.get_name()})
        self.crashed.set()

    # ---- consuming -----------------------------------------------------------
    async def _consume(self) -> None:
        assert self._consumer is not None and self.engine is not None
        consumer = self._consumer
        while True:
            if self.marks.outstanding() >= self._max_outstanding:
                consumer.pause(*consumer.assignment())  # keep polling: stay in the group
            elif consumer.paused():
                consumer.resume(*consumer.paused())
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    await self._accept(tp, record)

    async def _accept(self, tp: TopicPartition, record: ConsumerRecord[Any, Any]) -> None:
        assert self.engine is not None and self.reporter is not None
        ticket = self.marks.track(tp, record.offset)
        if ticket is None:
            return
        metrics.requests_consumed.inc()
        try:
            request = decode_refresh(record.value)
        except InvalidEvent as exc:
            await self._dead_letter_invalid(ticket, exc.reason, record)
            return
        self.engine.submit(Item(request, ticket, record.value, record.key))

    async def _dead_letter_invalid(self, ticket: Any, reason: str,
                                   record: ConsumerRecord[Any, Any]) -> None:
        assert self.reporter is not None
        backoff = Backoff(max_delay=self.settings.refresh_max_backoff)
        attempt = 0
        while True:
            try:
                await self.reporter.dead_letter_raw(ticket, reason, record.value, record.key)
                return
            except Exception as exc:  # noqa: BLE001 - Kafka trouble: retry, never skip
                attempt += 1
                log.warning("cannot dead-letter; retrying", extra={"error": f"{exc!r}"})
                await asyncio.sleep(backoff.delay(attempt))

    async def _send_dead_letter(self, letter: DeadLetter) -> None:
        assert self._producer is not None
        async with asyncio.timeout(self.settings.kafka_request_timeout + 5):
            await send_dead_letter(self._producer, self.settings, letter)

    # ---- offsets -------------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._commit_interval)
            await self._commit()

    async def _commit(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        offsets = self.marks.to_commit(partitions)
        if not offsets:
            return
        try:
            async with asyncio.timeout(watchdog_timeout(self.settings)):
                await self._consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - the next commit catches up (timeouts too)
            log.warning("offset commit failed", extra={"error": f"{exc!r}"})
            return
        self.marks.committed(offsets)

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        await self._commit(sorted(revoked))
        for tp in revoked:
            self.marks.revoke(tp)
        if self.engine is not None:
            self.engine.discard(lambda item: item.ticket.partition in revoked)
        log.info("partitions revoked", extra={"partitions": sorted(str(t) for t in revoked)})

    def assign(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self.marks.assign(tp)
        log.info("partitions assigned", extra={"partitions": sorted(str(t) for t in assigned)})


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def create(settings: RefresherSettings, health_services: Sequence[Service] | None = None,
           ) -> RefresherService:
    return RefresherService(settings)

