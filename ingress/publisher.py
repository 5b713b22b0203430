"""Publishing push events: an answer within ``publish_timeout``, ack or not.

The producer is the shared one (``acks=all``, idempotent). It is connected in
the background so the ingress can start (and say "not ready") while Kafka is
still coming up; a light metadata probe keeps :meth:`readiness` honest during an
outage. :meth:`publish` returns only when the broker acknowledged the event and
raises :class:`PublishError` otherwise; an event that timed out may still be
delivered later (harmless: duplicates are fine, loss is not).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pushrelay.core.events import PushEvent, encode
from pushrelay.infra import bus, metrics
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.settings import IngressSettings

log = logging.getLogger(__name__)

PROBE_INTERVAL = 5.0
#: Between attempts to reach Kafka: 0.5 s doubling, jittered, up to 30 s.
CONNECT_BACKOFF = Backoff(base=1.0, max_delay=30.0)
INGRESS_LINGER_MS = 0


class PublishError(Exception):
    """The event is not known to be durable in Kafka (a 503)."""


class KafkaPublisher:
    def __init__(self, settings: IngressSettings, probe_interval: float = PROBE_INTERVAL) -> None:
        self._settings = settings
        self._probe_interval = probe_interval
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.last_error: str | None = "not connected yet"

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingress:kafka")

    async def stop(self, within: float | None = None) -> None:
        """Stop probing, then flush and close the producer within ``within`` seconds
        (default: half the shutdown budget)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        producer, self._producer = self._producer, None
        self.connected = False
        if producer is not None:
            try:
                async with asyncio.timeout(
                        self._settings.shutdown_timeout / 2 if within is None else within):
                    await producer.stop()
            except TimeoutError:
                log.warning("Kafka producer did not flush in time")

    @property
    def producer(self) -> AIOKafkaProducer | None:
        """The connected producer, or None (shared with the delivery log)."""
        return self._producer

    def readiness(self) -> str | None:
        if self._producer is not None and self.connected:
            return None
        return f"Kafka producer not connected ({self.last_error})"

    async def publish(self, event: PushEvent) -> None:
        producer = self._producer
        if producer is None:
            raise PublishError(f"Kafka producer not connected ({self.last_error})")
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._settings.publish_timeout):
                future = await producer.send(self._settings.push_topic, encode(event),
                                             key=event.key)
                # Shielded: a timeout abandons the wait, not the message.
                await asyncio.shield(future)
        except TimeoutError:
            self._failed("no acknowledgement within publish_timeout")
            raise PublishError("timed out waiting for Kafka") from None
        except KafkaError as exc:
            self._failed(type(exc).__name__)
            raise PublishError(type(exc).__name__) from None
        metrics.publish_latency.observe(time.monotonic() - started)
        metrics.published.inc()
        self.connected, self.last_error = True, None

    def _failed(self, reason: str) -> None:
        self.connected, self.last_error = False, reason

    async def _run(self) -> None:
        await self._connect()
        while True:
            await asyncio.sleep(self._probe_interval)
            await self._probe()

    async def _connect(self) -> None:
        failures = 0
        while True:
            # Every request waits for its ack, so no linger: under load batches still
            # form on their own while the previous produce request is in flight.
            producer = bus.new_producer(self._settings, client_id="pushrelay-ingress",
                                        linger_ms=INGRESS_LINGER_MS)
            try:
                async with asyncio.timeout(self._settings.kafka_request_timeout + 5):
                    await bus.ensure_topics(self._settings)
                    await producer.start()
            except asyncio.CancelledError:  # stopped while connecting: leave nothing open
                await _close_quietly(producer)
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                failures += 1
                self._failed(f"{type(exc).__name__}: {exc}"[:200])
                await _close_quietly(producer)
                delay = CONNECT_BACKOFF.delay(failures)
                log.warning("Kafka not reachable; retrying", extra={
                    "reason": self.last_error, "retry_in": round(delay, 1)})
                await asyncio.sleep(delay)
                continue
            self._producer = producer
            self.connected, self.last_error = True, None
            log.info("Kafka producer connected", extra={"topic": self._settings.push_topic})
            return

    async def _probe(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            async with asyncio.timeout(min(5.0, self._settings.kafka_request_timeout)):
                await producer.client.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError) as exc:
            if self.connected:
                log.warning("Kafka unreachable", extra={"reason": type(exc).__name__})
            self._failed(f"metadata probe failed: {type(exc).__name__}")
            return
        if not self.connected:
            log.info("Kafka reachable again")
        self.connected, self.last_error = True, None


async def _close_quietly(producer: AIOKafkaProducer) -> None:
    try:
        async with asyncio.timeout(5):
            await producer.stop()
    except Exception:  # noqa: BLE001 - closing a producer that never started
        pass
