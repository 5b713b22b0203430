"""The spool's forwarder: drains the ingress's spool into Kafka, in order, at least once.

It is the spool's one reader (:mod:`ingress.spool`): it sends the oldest
undrained records to the push topic in batches, waits for every ack, then
marks them drained (so a crash in between re-sends the batch: a harmless
duplicate, never a gap) and prunes what is drained. A batch Kafka does not
take is retried with the project's :class:`Backoff`. A record Kafka will never
take (:class:`RecordRejected`) or one that no longer decodes goes to the
dead-letter topic instead of blocking the spool. Each forwarded push's
delivery record becomes ``accepted`` (with ``spooled_at``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ingress.spool import Spool
from pushrelay.core.deliveries import DeliveryFact
from pushrelay.core.events import InvalidEvent, PushEvent, decode_push
from pushrelay.infra import metrics
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.bus.api import BusError, BusUnavailable, Producer, Record, RecordRejected
from pushrelay.infra.bus.letters import dead_letter_for, send_dead_letter
from pushrelay.infra.bus.topics import watchdog_timeout
from pushrelay.infra.settings import IngressSettings

log = logging.getLogger(__name__)

#: Dead letters from the spool name this stage.
STAGE = "ingress-spool"

#: Between attempts to forward a batch Kafka did not take: 0.5 s doubling, up to 10 s.
FORWARD_BACKOFF = Backoff(base=0.5, max_delay=10.0)
BATCH = 500
#: Longest idle wait for a new spooled record before re-checking (and updating gauges).
IDLE_WAIT = 1.0

#: While draining, prune what is drained at least this often (s).
PRUNE_INTERVAL = 10.0

OnFact = Callable[[DeliveryFact], None]
#: The producer to forward with, or None while there is none (not connected yet).
ProducerSource = Callable[[], Producer | None]


@dataclass(slots=True)
class _Item:
    """One spooled record on its way to Kafka."""

    record: Record
    event: PushEvent | None = None
    future: asyncio.Future[None] | None = None
    #: Why it goes to the dead letters instead (None: it is forwarded).
    problem: str | None = None


def forwarded_fact(event: PushEvent, spooled_at: float, *, failed: str | None = None,
                   ) -> DeliveryFact | None:
    """The delivery record of a spooled event once forwarded (or dead-lettered)."""
    if event.delivery is None:
        return None
    return DeliveryFact(
        delivery=event.delivery, stage="ingress", outcome="failed" if failed else "accepted",
        receiver=event.receiver, project=event.scope.project, repository=event.repository,
        tags=list(event.tags), reason=failed,
        spooled_at=datetime.fromtimestamp(spooled_at, UTC))


class Forwarder:
    """Drains a :class:`Spool` into the push topic, in order, at least once.

    ``start()`` creates the task (the service owns it: :attr:`task`);
    ``stop(within)`` lets a batch being forwarded finish for up to ``within``
    seconds (so its acks can be committed), then cancels. Both idempotent.
    """

    def __init__(self, spool: Spool, producer: ProducerSource, settings: IngressSettings,
                 on_fact: OnFact | None = None, *, backoff: Backoff = FORWARD_BACKOFF,
                 batch: int = BATCH) -> None:
        self._spool = spool
        self._producer = producer
        self._settings = settings
        self._on_fact = on_fact
        self._backoff = backoff
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        #: The last reason a batch was not forwarded (None once one was).
        self.last_error: str | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="ingress:spool-forwarder")

    async def stop(self, within: float) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if not self._idle.is_set():
            try:
                async with asyncio.timeout(within):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("spool forwarder stopped with a batch in flight (it is re-sent "
                            "after the restart)")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        pruned_at = loop.time()
        while not self._stopping:
            records = await self._spool.next_batch(self._batch, IDLE_WAIT)
            if not records:
                self._spool.export_metrics()  # the oldest age moves on
                continue
            self._idle.clear()
            try:
                facts = await self._forward(records)
            except (BusError, TimeoutError) as exc:
                if isinstance(exc, BusError) and not exc.retriable:
                    raise  # never helps to retry: crash (visible, restarted), nothing lost
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                delay = self._backoff.delay(failures)
                if failures == 1 or failures % 10 == 0:
                    log.warning("could not forward spooled events; retrying", extra={
                        "reason": self.last_error, "retry_in": round(delay, 1),
                        "depth": self._spool.state().depth})
                self._idle.set()
                self._spool.export_metrics()  # the oldest age moves on
                await asyncio.sleep(delay)
                continue
            await self._spool.mark_drained(records[-1].offset + 1)
            self._idle.set()
            if failures:
                log.info("forwarding spooled events again", extra={"after_failures": failures})
            failures, self.last_error = 0, None
            metrics.spool_drained.inc(len(records))
            for fact in facts:
                self._record(fact)
            drained = not self._spool.pending
            if drained or loop.time() - pruned_at > PRUNE_INTERVAL:
                if drained:
                    log.info("spool drained: publishing directly again")
                await self._spool.prune()
                pruned_at = loop.time()

    async def _forward(self, records: Sequence[Record]) -> list[DeliveryFact]:
        producer = self._producer()
        if producer is None:
            raise BusUnavailable("the producer is not connected yet")
        return await self._forward_with(producer, records)

    async def _forward_with(self, producer: Producer, records: Sequence[Record],
                            ) -> list[DeliveryFact]:
        """Send ``records`` and wait for every ack; dead-letter what Kafka will never
        take (and what no longer decodes). Raises the first retriable
        :class:`BusError` (the whole batch is then sent again: a duplicate at
        worst, never a gap); the delivery facts of the batch otherwise."""
        items = [_Item(record) for record in records]
        async with asyncio.timeout(watchdog_timeout(self._settings)):
            for item in items:
                await self._send(producer, item)
            pending = [item for item in items if item.future is not None]
            results = await asyncio.gather(*(item.future for item in pending if item.future),
                                           return_exceptions=True)
        for item, result in zip(pending, results, strict=True):
            if isinstance(result, RecordRejected):
                item.problem = f"Kafka will not take it: {result}"
            elif isinstance(result, BaseException):
                raise result
        facts: list[DeliveryFact] = []
        for item in items:
            if item.problem is not None:
                await self._dead_letter(producer, item.record, item.problem)
            if item.event is not None and (fact := forwarded_fact(
                    item.event, item.record.timestamp,
                    failed=item.problem and f"dead-lettered: {item.problem}")):
                facts.append(fact)
        return facts

    async def _send(self, producer: Producer, item: _Item) -> None:
        try:
            item.event = decode_push(item.record.value)
        except InvalidEvent as exc:
            item.problem = f"undecodable spooled record: {exc}"
            return
        try:
            item.future = await producer.send(self._settings.push_topic,
                                                    item.record.value, key=item.event.key)
        except RecordRejected as exc:
            item.problem = f"Kafka will not take it: {exc}"

    async def _dead_letter(self, producer: Producer, record: Record, reason: str) -> None:
        try:
            await send_dead_letter(producer, self._settings,
                                   dead_letter_for(STAGE, reason, record))
        except RecordRejected as exc:  # the dead-letter topic is missing: nowhere to go
            log.error("spooled event dropped: not even a dead letter was taken", extra={
                "reason": reason, "error": str(exc), "offset": record.offset,
                "payload": record.value[:2000].decode("utf-8", errors="replace")})
            return
        metrics.dead_lettered.labels(STAGE).inc()

    def _record(self, fact: DeliveryFact) -> None:
        if self._on_fact is None:
            return
        try:
            self._on_fact(fact)
        except Exception:  # noqa: BLE001 - visibility must never stop the forwarder
            log.exception("delivery hook failed", extra={"delivery": fact.delivery})
