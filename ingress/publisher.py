"""Publishing push events: an answer within ``publish_timeout``, durable or not.

The :class:`Publisher` owns one bus producer (durable on ack: Kafka's
``acks=all``, idempotent). It is connected in the background, with backoff, so
the ingress can start (and say "not ready") while the bus is still coming up;
the producer's :meth:`~pushrelay.infra.bus.api.Producer.probe` keeps
:meth:`Publisher.readiness` honest during an outage. :meth:`Publisher.publish`
returns only once the event is durable and raises :class:`PublishError`
otherwise; an event that timed out may still be delivered later (harmless:
duplicates are fine, loss is not).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ingress.payload import OutgoingEvent, encoded
from pushrelay.infra import metrics
from pushrelay.infra.backoff import Backoff
from pushrelay.infra.bus.api import Bus, BusError, BusUnavailable, Producer
from pushrelay.infra.settings import IngressSettings

log = logging.getLogger(__name__)

PROBE_INTERVAL = 5.0
#: Between attempts to reach the bus: 1 s doubling, jittered, up to 30 s.
CONNECT_BACKOFF = Backoff(base=1.0, max_delay=30.0)
#: 5 ms, across partitions (the bus's linger, bus/linger.py): at 150 pushes/s the
#: ingress sent 0.90 produce requests per push without it and 0.74 with it, the
#: broker's CPU per push 2,340 -> 2,078 us, for ~7 ms more before each 202
#: (docs/benchmarks.md, section 9). A window that holds 16 records leaves at once
#: (the bus's LINGER_MAX_RECORDS), so under load the window is no ceiling.
INGRESS_LINGER_MS = 5
CLIENT_ID = "pushrelay-ingress"


class PublishError(Exception):
    """The event is not known to be durable on the bus (a 503, or the spool).

    ``disconnected``: the producer was known to be unable to take it (not
    connected yet, or the bus said it is unavailable), as opposed to a send
    that got no answer within ``publish_timeout``.
    """

    def __init__(self, reason: str, *, disconnected: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.disconnected = disconnected


class Publisher:
    """Push events onto ``settings.push_topic`` through one producer of ``bus``.

    ``start()`` returns at once (the connection is made by :attr:`task`);
    ``stop()`` flushes and closes. Both are idempotent.
    """

    def __init__(self, settings: IngressSettings, bus: Bus,
                 probe_interval: float = PROBE_INTERVAL) -> None:
        self._settings = settings
        self._bus = bus
        self._probe_interval = probe_interval
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.last_error: str | None = "not connected yet"

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The background connect-then-probe task (the service watches it)."""
        return self._task

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingress:publisher")

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
                log.warning("producer did not flush in time")
            except BusError as exc:
                log.warning("producer did not flush: %s", exc)

    @property
    def producer(self) -> Producer | None:
        """The connected producer, or None (shared with the delivery log)."""
        return self._producer

    def readiness(self) -> str | None:
        if self._producer is not None and self.connected:
            return None
        return f"producer not connected ({self.last_error})"

    async def publish(self, event: OutgoingEvent) -> None:
        """Return once ``event`` is durable, within ``publish_timeout``; else raise
        :class:`PublishError`."""
        producer = self._producer
        if producer is None:
            raise PublishError(f"producer not connected ({self.last_error})", disconnected=True)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._settings.publish_timeout):
                future = await producer.send(self._settings.push_topic, encoded(event),
                                             key=event.key)
                # Shielded: a timeout abandons the wait, not the message.
                await asyncio.shield(future)
        except TimeoutError:
            self._failed("no acknowledgement within publish_timeout")
            raise PublishError("timed out waiting for the bus", disconnected=False) from None
        except BusError as exc:
            self._failed(str(exc)[:200])
            raise PublishError(type(exc).__name__,
                               disconnected=isinstance(exc, BusUnavailable)) from None
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
            producer = self._bus.producer(client_id=CLIENT_ID, linger_ms=INGRESS_LINGER_MS)
            try:
                async with asyncio.timeout(self._settings.kafka_request_timeout + 5):
                    await self._bus.ensure_topics()
                    await producer.start()
            except asyncio.CancelledError:  # stopped while connecting: leave nothing open
                await _close_quietly(producer)
                raise
            except (BusError, TimeoutError) as exc:
                failures += 1
                self._failed(f"{type(exc).__name__}: {exc}"[:200])
                await _close_quietly(producer)
                delay = CONNECT_BACKOFF.delay(failures)
                log.warning("bus not reachable; retrying", extra={
                    "reason": self.last_error, "retry_in": round(delay, 1)})
                await asyncio.sleep(delay)
                continue
            self._producer = producer
            self.connected, self.last_error = True, None
            log.info("producer connected", extra={"topic": self._settings.push_topic})
            return

    async def _probe(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            await producer.probe()
        except BusError as exc:
            if self.connected:
                log.warning("bus unreachable", extra={"reason": type(exc).__name__})
            self._failed(f"probe failed: {type(exc).__name__}")
            return
        if not self.connected:
            log.info("bus reachable again")
        self.connected, self.last_error = True, None


async def _close_quietly(producer: Producer) -> None:
    try:
        async with asyncio.timeout(5):
            await producer.stop()
    except Exception:  # noqa: BLE001 - closing a producer that never started
        pass
