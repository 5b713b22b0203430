"""The router service: push events in, refresh requests out (docs/router.md).

One loop, batch by batch: ``poll`` → :func:`router.routing.route_batch`
against the live Warehouse index → send the refresh requests, dead letters and
delivery facts together (one produce request) → wait until every request and
dead letter is durable (the bus's ack; facts are best effort) → mark the
batch's offsets done. Done offsets are committed at most
every ``PUSHRELAY_COMMIT_INTERVAL`` (and at once when the topic goes idle, on a
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeGuard

from kubernetes_asyncio.client import ApiClient

from pushrelay.core.deliveries import DeliveryFact
from pushrelay.core.events import encode
from pushrelay.core.matching import Compiler
from pushrelay.infra import metrics
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.bus.api import (
    Bus,
    BusError,
    BusTimeout,
    CommitRefused,
    Consumer,
    Producer,
    Record,
    TopicPartition,
)
from pushrelay.infra.bus.kafka import KafkaBus
from pushrelay.infra.bus.letters import dead_letter_for
from pushrelay.infra.bus.topics import watchdog_timeout
from pushrelay.infra.deliveries import DeliveryLog
from pushrelay.infra.kube.client import new_api_client
from pushrelay.infra.kube.events import EventRecorder
from pushrelay.infra.lifecycle import Deadline, ServiceBase, close_all
from pushrelay.infra.runtime import Service
from pushrelay.infra.settings import RouterSettings
from router.index import LiveIndex
from router.routing import STAGE, Outgoing, route_batch

log = logging.getLogger(__name__)

POLL_WAIT = 0.25  # s
BATCH_RECORDS = 1000
#: The producer does not linger: a batch's requests, dead letters and delivery
#: facts are all enqueued in one turn of the event loop, so they leave together
#: anyway; a 5 ms linger only added a timer wakeup per batch.
LINGER_MS = 0
#: Retries of unacknowledged sends (jittered, 0.1 s doubling up to 5 s).
SEND_BACKOFF = Backoff(base=0.1, max_delay=5.0)


class _Handoff:
    """Revocation waits for the batch in flight to be acked, then commits what is
    done (an :class:`~pushrelay.infra.bus.api.Rebalance`)."""

    def __init__(self, commit_done: Callable[[], Awaitable[None]]) -> None:
        self._commit_done = commit_done

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        await self._commit_done()

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("push-events partitions assigned",
                 extra={"partitions": sorted(tp.partition for tp in assigned)})


class RouterService(ServiceBase):
    name = "router"

    def __init__(self, settings: RouterSettings, *, bus: Bus | None = None,
                 compiler: Compiler | None = None) -> None:
        """``bus``: the process's (started by the runtime); None: a :class:`KafkaBus`
        of ``settings`` (it needs no start)."""
        super().__init__(settings.shutdown_timeout)
        self.settings = settings
        self._bus: Bus = bus if bus is not None else KafkaBus(settings)
        self._compiler = compiler
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        # Watchdog over bus calls made under the lock (the bus has its own timeouts).
        self._ack_timeout = watchdog_timeout(settings)
        self._api: ApiClient | None = None
        self._recorder: EventRecorder | None = None
        self.live: LiveIndex | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._deliveries: DeliveryLog | None = None
        self._done: dict[TopicPartition, int] = {}  # durable, not yet committed
        self._commit_due = 0.0  # loop time of the next periodic commit
        self._task: asyncio.Task[None] | None = None
        self._final_commit = settings.shutdown_timeout / 4  # set from the deadline by _stop
        self.events = 0  # push events consumed (valid or not)
        self.requests = 0  # refresh requests acknowledged
        self.dead_letters = 0  # dead letters acknowledged

    async def _start(self) -> None:
        await self._bus.ensure_topics()
        self._api = await new_api_client(self.settings.kubeconfig)
        self._recorder = EventRecorder(self._api, "pushrelay-router",
                                       max_rate=self.settings.event_qps)
        await self._recorder.start()
        self.live = LiveIndex(self._api, recorder=self._recorder, compiler=self._compiler)
        await self.live.start()
        self._producer = self._bus.producer(client_id="pushrelay-router", linger_ms=LINGER_MS)
        await self._producer.start()
        self._deliveries = DeliveryLog(lambda: self._producer, self.settings)
        await self._deliveries.start()
        self._task = self.supervise(self._run(), "router:consume")

    def _readiness(self) -> str | None:
        if self.live is None or not self.live.synced.is_set():
            error = self.live.last_error if self.live is not None else None
            return "warehouse index not synced" + (f": {error}" if error else "")
        if self._consumer is None:
            return "consumer not started"
        return None

    async def _stop(self, deadline: Deadline) -> None:
        """Let the batch in flight finish and commit (half of the budget, the final
        commit a quarter of that), flush delivery facts, close everything."""
        self._stopping.set()
        if self._task is not None:
            self._final_commit = deadline.share(0.5 / 4)
            try:
                async with asyncio.timeout(deadline.share(0.5)):
                    await asyncio.shield(self._task)
            except TimeoutError:
                log.warning("batch still in flight at shutdown; it stays uncommitted")
            except Exception:  # noqa: BLE001, S110 - the supervisor reported it already
                pass
        if self._deliveries is not None:
            try:
                async with asyncio.timeout(deadline.share(0.3)):
                    await self._deliveries.stop()
            except TimeoutError:
                log.warning("delivery facts not flushed before shutdown")
        await close_all(
            ("the producer", self._producer.stop if self._producer else None),
            ("the Warehouse informer", self.live.stop if self.live else None),
            ("the Event recorder", self._recorder.stop if self._recorder else None),
            ("the Kubernetes client", self._api.close if self._api else None),
            within=deadline.remaining())

    async def _run(self) -> None:
        assert self.live is not None
        synced = asyncio.create_task(self.live.synced.wait())
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({synced, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (synced, stopping):
            waiter.cancel()
        await asyncio.gather(synced, stopping, return_exceptions=True)
        if self._stopping.is_set():
            return
        self._consumer = self._bus.consumer(
            self.settings.push_topic, self.settings.router_group,
            client_id="pushrelay-router", listener=_Handoff(self._commit_done),
        )
        await self._consumer.start()
        try:
            await self._consume(self._consumer)
        finally:
            await self._consumer.stop()

    async def _consume(self, consumer: Consumer) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            batch = await consumer.poll(POLL_WAIT, BATCH_RECORDS)
            async with self._lock:
                if batch:
                    out, facts = self._route(batch)
                    if not await self._deliver(out, facts):
                        break  # stopping: the batch stays uncommitted
                    self._done.update({tp: records[-1].offset + 1
                                       for tp, records in batch.items() if records})
                if self._done and (not batch or loop.time() >= self._commit_due):
                    await self._commit(consumer)
        # Stopping: commit what is done, within a share of the shutdown budget (the
        # bus may be the reason the last batch could not be delivered).
        await self._commit_done(self._final_commit)

    async def _commit_done(self, within: float | None = None) -> None:
        """Wait for the batch in flight, then commit every done offset."""
        async with self._lock:
            if self._consumer is not None:
                await self._commit(self._consumer, within)

    def _route(self, batch: Mapping[TopicPartition, Sequence[Record]],
               ) -> tuple[list[Outgoing], list[DeliveryFact]]:
        assert self.live is not None
        records = [record for records in batch.values() for record in records]
        out, facts = route_batch(self.live.index, records)
        self.events += len(records)
        metrics.events_consumed.inc(len(records))
        metrics.events_matched.inc(sum(1 for msg in out if not msg.dead_letter))
        return out, facts

    async def _deliver(self, pending: list[Outgoing], facts: list[DeliveryFact]) -> bool:
        """Send everything and wait for the acks, retrying what failed; False when
        stopping first (the batch is then left uncommitted, to be re-delivered).

        The batch's delivery facts are sent with the first attempt, in the same
        turn of the event loop, so the requests, dead letters and facts leave in
        one produce request (they were two: the facts followed the acks). Facts
        stay best effort: they are not waited for, and the offsets still wait
        for the requests' and dead letters' acks only. A fact may now be on the
        bus before its batch is durable; if that batch is then re-delivered, it
        is routed again and its fact written again under the same key.
        """
        assert self._producer is not None
        attempts = 0
        while True:
            sent = [(msg, await self._send(msg)) for msg in pending]
            if attempts == 0 and self._deliveries is not None:
                await self._deliveries.publish(facts)
            if not sent:
                return True
            results = await self._acks([f for _, f in sent])
            failed: list[Outgoing] = []
            for (msg, _), result in zip(sent, results, strict=True):
                if not isinstance(result, BaseException):
                    self._acked(msg)
                elif _permanent(result) and not msg.dead_letter:
                    failed.append(self._unsendable(msg, result))
                elif _permanent(result):
                    log.error("dead letter cannot be produced; dropped",
                              extra={"error": repr(result)})
                else:
                    failed.append(msg)
            pending = failed
            if not pending:
                return True
            attempts += 1
            if self._stopping.is_set() and attempts >= 3:
                return False
            log.warning("retrying %d unacknowledged messages", len(pending))
            await asyncio.sleep(SEND_BACKOFF.delay(attempts))

    async def _acks(self, futures: list[asyncio.Future[Any]]) -> list[Any]:
        """Each send's result or exception, waiting at most the ack timeout.

        The bus bounds a send by its request timeout; this is the watchdog in
        case it does not: an ack still missing counts as a retriable
        :class:`BusTimeout` (the message is sent again: a duplicate at worst,
        never a loss).
        """
        if futures:
            await asyncio.wait(futures, timeout=self._ack_timeout)
        return [
            (f.exception() or f.result()) if f.done() and not f.cancelled()
            else BusTimeout("no acknowledgement in time")
            for f in futures
        ]

    async def _send(self, msg: Outgoing) -> asyncio.Future[Any]:
        assert self._producer is not None
        try:
            topic = (self.settings.dead_letter_topic if msg.dead_letter
                     else self.settings.refresh_topic)
            return await self._producer.send(topic, msg.value, key=msg.key)
        except Exception as exc:  # noqa: BLE001 - surfaced through the future
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
            return future

    def _acked(self, msg: Outgoing) -> None:
        if msg.dead_letter:
            self.dead_letters += 1
            metrics.dead_lettered.labels(STAGE).inc()
        else:
            self.requests += 1
            metrics.requests_produced.inc()

    def _unsendable(self, msg: Outgoing, error: BusError) -> Outgoing:
        """A refresh request the bus will never take: keep it, as a dead letter."""
        letter = dead_letter_for(STAGE, f"refresh request not produced: {error!r}",
                                 payload=msg.value)
        return Outgoing(encode(letter), msg.key, True)

    async def _commit(self, consumer: Consumer, within: float | None = None) -> None:
        """Commit the offsets whose batches are durable (the next call retries a failure)."""
        offsets, self._done = self._done, {}
        self._commit_due = asyncio.get_running_loop().time() + self.settings.commit_interval
        if not offsets:
            return
        try:
            async with asyncio.timeout(self._ack_timeout if within is None
                                       else min(within, self._ack_timeout)):
                await consumer.commit(offsets)
        except TimeoutError:
            log.warning("commit timed out; retried with the next commit")
            self._keep(offsets)
        except CommitRefused as exc:
            # The partitions went to another member: it re-routes from the last commit.
            log.warning("commit refused after a rebalance; the new owner re-routes",
                        extra={"error": repr(exc)})
        except BusError as exc:
            log.warning("commit failed; retried with the next commit",
                        extra={"error": repr(exc)})
            self._keep(offsets)

    def _keep(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets not committed yet, merged under anything newer."""
        for tp, offset in offsets.items():
            self._done.setdefault(tp, offset)


def _permanent(error: BaseException) -> TypeGuard[BusError]:
    """The bus will never take this message (too large, bad topic, ...): a
    :class:`BusError` that is not retriable (a timeout always is)."""
    return isinstance(error, BusError) and not error.retriable


def create(settings: RouterSettings, health_services: Sequence[Service] | None = None,
           *, bus: Bus | None = None) -> RouterService:
    """Entry point used by ``pushrelay router`` / ``python -m router``."""
    return RouterService(settings, bus=bus)
