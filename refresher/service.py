"""The refresher service: refresh-requests from the bus to Warehouse patches.

One consumer-group member. The consume task tracks every record in the commit
watermark and hands decoded requests to the :class:`Engine`; invalid ones are
dead-lettered. A commit task commits each partition up to its lowest request
not yet satisfied. On a rebalance the revoked partitions are committed and
their pending requests forgotten (the next owner consumes them again).

Graceful stop (:meth:`RefresherService._stop`): stop fetching, let in-flight
patches finish, hand back requests still waiting for their trailing window
uncommitted, commit the watermark, flush Events, close — all within the one
shutdown budget the runtime hands over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from kubernetes_asyncio.client import ApiClient

from pushrelay.core.events import DeadLetter, InvalidEvent, decode_refresh
from pushrelay.infra import metrics
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.bus.api import Bus, Consumer, Producer, Record, TopicPartition
from pushrelay.infra.bus.kafka import KafkaBus
from pushrelay.infra.bus.letters import send_dead_letter
from pushrelay.infra.bus.topics import watchdog_timeout
from pushrelay.infra.deliveries import DeliveryLog
from pushrelay.infra.kube.client import new_api_client
from pushrelay.infra.kube.events import EventRecorder
from pushrelay.infra.lifecycle import Deadline, ServiceBase, close_all
from pushrelay.infra.runtime import Service
from pushrelay.infra.settings import RefresherSettings
from refresher.bucket import TokenBucket
from refresher.engine import Engine, Item
from refresher.patcher import Patcher
from refresher.report import Reporter
from refresher.watermark import Watermarks

log = logging.getLogger(__name__)

COMPONENT = "pushrelay-refresher"
#: Events are flushed this often (s); their rate is capped by PUSHRELAY_EVENT_QPS.
EVENT_INTERVAL = 5.0
#: Linger (ms) of the producer of delivery facts. Facts are best effort and nobody
#: waits for them, so they may gather: at 200 refreshes/s, 50 ms puts ~10 facts in
#: one produce request instead of one request (and broker round trip) per refresh.
#: Dead letters, which the consume loop awaits, keep their own producer and the
#: bus's short default.
FACT_LINGER_MS = 50


class _Rebalance:
    """The service's :class:`~pushrelay.infra.bus.api.Rebalance` listener."""

    def __init__(self, service: RefresherService) -> None:
        self._service = service

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        await self._service.revoke(partitions)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self._service.assign(partitions)


class RefresherService(ServiceBase):
    name = "refresher"

    def __init__(self, settings: RefresherSettings, *, bus: Bus | None = None) -> None:
        """``bus``: the process's (started by the runtime); None: a :class:`KafkaBus`
        of ``settings`` (it needs no start)."""
        super().__init__(settings.shutdown_timeout)
        self.settings = settings
        self._bus: Bus = bus if bus is not None else KafkaBus(settings)
        self._concurrency = settings.refresh_concurrency
        self._max_outstanding = settings.refresh_max_outstanding
        self.marks: Watermarks[TopicPartition] = Watermarks()
        self.bucket = TokenBucket(settings.refresh_qps, settings.refresh_burst)
        self._api: ApiClient | None = None
        self._producer: Producer | None = None  # dead letters
        self._fact_producer: Producer | None = None  # delivery facts
        self._consumer: Consumer | None = None
        self._recorder: EventRecorder | None = None
        self._deliveries: DeliveryLog | None = None
        self.reporter: Reporter | None = None
        self.engine: Engine | None = None
        self._consuming: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------
    async def _start(self) -> None:
        s = self.settings
        await self._bus.ensure_topics()
        self._api = await new_api_client(s.kubeconfig)
        self._producer = self._bus.producer(client_id=COMPONENT)
        await self._producer.start()
        self._fact_producer = self._bus.producer(client_id=f"{COMPONENT}-facts",
                                                 linger_ms=FACT_LINGER_MS)
        await self._fact_producer.start()
        self._recorder = EventRecorder(self._api, COMPONENT, interval=EVENT_INTERVAL,
                                       max_rate=s.event_qps, acquire=self.bucket.acquire)
        await self._recorder.start()
        self._deliveries = DeliveryLog(lambda: self._fact_producer, s)
        await self._deliveries.start()
        self.reporter = Reporter(self.marks, recorder=self._recorder,
                                 dead_letter=self._send_dead_letter,
                                 facts=self._deliveries.record)
        self.engine = Engine(
            refresh=Patcher(self._api, timeout=s.refresh_patch_timeout).refresh,
            sink=self.reporter, interval=s.refresh_min_interval, bucket=self.bucket,
            backoff=Backoff(max_delay=s.refresh_max_backoff), concurrency=self._concurrency,
        )
        self.watch(self.engine.start())
        self._consumer = self._bus.consumer(s.refresh_topic, s.refresher_group,
                                            client_id=s.refresher_group,
                                            listener=_Rebalance(self))
        await self._consumer.start()
        self._consuming = self.supervise(self._consume(), "refresher:consume")
        self.supervise(self._commit_loop(), "refresher:commit")
        log.info("refresher started", extra={
            "topic": s.refresh_topic, "group": s.refresher_group, "qps": s.refresh_qps,
            "burst": s.refresh_burst, "min_interval": s.refresh_min_interval})

    async def _stop(self, deadline: Deadline) -> None:
        """Stop fetching; finish in-flight patches (40% of the budget) and hand back
        the rest uncommitted; commit the watermark (a quarter of what is left);
        flush Events and delivery facts; close the clients."""
        if self._consuming is not None:  # 1. stop fetching
            self._consuming.cancel()
            await asyncio.gather(self._consuming, return_exceptions=True)
        if self.engine is not None:  # 2. finish in-flight patches, hand back the rest
            cancelled = await self.engine.stop(drain_timeout=deadline.share(0.4))
            if cancelled:
                log.warning("patches cancelled at shutdown; they will be redone",
                            extra={"cancelled": cancelled})
        if self._consumer is not None:  # 3. commit the watermark
            await self._commit(within=deadline.share(0.25))
        for what, flusher, share in (("events", self._recorder, 0.4),
                                     ("delivery facts", self._deliveries, 0.3)):
            if flusher is not None:  # 4. flush Events and delivery facts (best effort)
                try:
                    async with asyncio.timeout(deadline.share(share)):
                        await flusher.stop()
                except TimeoutError:
                    log.warning("%s not flushed before shutdown", what)
        await close_all(
            ("the consumer", self._consumer.stop if self._consumer else None),
            ("the producer", self._producer.stop if self._producer else None),
            ("the facts producer", self._fact_producer.stop if self._fact_producer else None),
            ("the Kubernetes client", self._api.close if self._api else None),
            within=deadline.remaining())
        log.info("refresher stopped", extra={"outstanding": self.marks.outstanding()})

    # ---- consuming -----------------------------------------------------------
    async def _consume(self) -> None:
        assert self._consumer is not None and self.engine is not None
        consumer = self._consumer
        while True:
            if self.marks.outstanding() >= self._max_outstanding:
                consumer.pause(*consumer.assignment())  # keep polling: stay in the group
            elif consumer.paused():
                consumer.resume(*consumer.paused())
            batches = await consumer.poll(0.5, 2000)
            for tp, records in batches.items():
                for record in records:
                    await self._accept(tp, record)

    async def _accept(self, tp: TopicPartition, record: Record) -> None:
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
                                   record: Record) -> None:
        assert self.reporter is not None
        backoff = Backoff(max_delay=self.settings.refresh_max_backoff)
        attempt = 0
        while True:
            try:
                await self.reporter.dead_letter_raw(ticket, reason, record.value, record.key)
                return
            except Exception as exc:  # noqa: BLE001 - bus trouble: retry, never skip
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
            await asyncio.sleep(self.settings.commit_interval)
            await self._commit()

    async def _commit(self, partitions: Sequence[TopicPartition] | None = None,
                      within: float | None = None) -> None:
        assert self._consumer is not None
        offsets = self.marks.to_commit(partitions)
        if not offsets:
            return
        bound = watchdog_timeout(self.settings)
        try:
            async with asyncio.timeout(bound if within is None else min(within, bound)):
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


def create(settings: RefresherSettings, health_services: Sequence[Service] | None = None,
           *, bus: Bus | None = None) -> RefresherService:
    """Entry point used by ``pushrelay refresher`` / ``python -m refresher``."""
    return RefresherService(settings, bus=bus)

