"""The ingress service: receiver registry + publisher onto the bus + HTTP server.

``create(settings)`` builds it; ``start()`` connects to Kubernetes, starts the
informers and the (background) bus connection, and listens at once: receivers
and ``/healthz`` on the public port (:attr:`IngressService.port`), ``/healthz``,
``/readyz`` (receivers loaded, producer connected), ``/metrics`` and
``/openapi.json`` on the health port (:attr:`IngressService.health_port`), for
every service of the process. ``stop()`` stops accepting, lets in-flight
requests finish, flushes the producer, stops the informers, and closes the
health port last, within the one shutdown budget; the lifecycle is
:class:`pushrelay.infra.lifecycle.ServiceBase`'s.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence

from aiohttp import web
from kubernetes_asyncio.client import ApiClient

from ingress.app import OnDelivery, WebhookHandler, build_app
from ingress.durable import DurablePublisher
from ingress.forwarder import Forwarder
from ingress.openapi import openapi_route
from ingress.publisher import Publisher, PublishError
from ingress.registry import ReceiverRegistry, object_ref
from ingress.spool import Spool
from pushrelay.core.deliveries import DeliveryFact, recorded
from pushrelay.core.receivers import Receiver
from pushrelay.infra.bus.api import Bus
from pushrelay.infra.bus.kafka import KafkaBus
from pushrelay.infra.deliveries import DeliveryLog
from pushrelay.infra.kube.client import new_api_client
from pushrelay.infra.kube.events import EventRecorder
from pushrelay.infra.lifecycle import Deadline, ServiceBase, close_all
from pushrelay.infra.runtime import HealthServer, Service
from pushrelay.infra.settings import IngressSettings

log = logging.getLogger(__name__)

# After a rejection with an unread body (413, 404), read and discard what the client
# still sends for this long so it can see the answer, then close.
LINGERING_TIME = 2.0


class IngressService(ServiceBase):
    name = "ingress"
    #: The ingress runs the health server (/healthz, /readyz, /metrics and its
    #: /openapi.json on PUSHRELAY_HEALTH_PORT) for every service in the process,
    #: so the runtime starts none; its public port serves receivers and /healthz.
    serves_health = True

    def __init__(self, settings: IngressSettings,
                 health_services: Sequence[Service] | None = None, *,
                 bus: Bus | None = None) -> None:
        """``bus``: the process's (started by the runtime); None: a :class:`KafkaBus`
        of ``settings`` (it needs no start)."""
        super().__init__(settings.shutdown_timeout)
        self.settings = settings
        self.port: int | None = None
        self.registry = ReceiverRegistry(settings)
        bus = bus if bus is not None else KafkaBus(settings)
        self.publisher = Publisher(settings, bus)
        self.deliveries = DeliveryLog(lambda: self.publisher.producer, settings)
        # The spool is for Kafka outages; the embedded bus is a local log already.
        self._spool_ignored = bool(settings.spool_dir) and bus.kind != "kafka"
        self.spool = (Spool.in_directory(settings)
                      if settings.spool_dir and not self._spool_ignored else None)
        self.forwarder = (Forwarder(self.spool, lambda: self.publisher.producer, settings,
                                    on_fact=self.deliveries.record)
                          if self.spool is not None else None)
        self.handler = WebhookHandler(settings, self.registry,
                                      DurablePublisher(self.publisher, self.spool),
                                      publish_error=PublishError,
                                      on_delivery=self._on_delivery)
        # all-in-one passes a list it fills later: keep the very same object.
        self._health: Sequence[Service] = (
            health_services if health_services is not None else [self])
        self._api: ApiClient | None = None
        self._recorder: EventRecorder | None = None
        self._runner: web.AppRunner | None = None
        self._health_server: HealthServer | None = None

    def _on_delivery(self, fact: DeliveryFact, receiver: Receiver) -> None:
        """Record the outcome for `pushrelay deliveries` (an ordinary *accepted* is
        recorded by the push event itself: no message of its own) and as an Event
        on the config."""
        if recorded(fact):
            self.deliveries.record(fact)
        if self._recorder is None:
            return
        kind = "test notification" if fact.test_notification else "push"
        if fact.outcome == "accepted":
            reason, type_ = "DeliveryAccepted", "Normal"
            message = f"receiver {receiver.name!r} accepted a {kind} of {fact.repository}"
        elif fact.outcome == "spooled":
            reason, type_ = "DeliverySpooled", "Warning"
            message = (f"receiver {receiver.name!r} spooled a {kind} of {fact.repository} "
                       f"({fact.reason}); it is forwarded once Kafka takes it")
        else:
            reason, type_ = "DeliveryRejected", "Warning"
            message = f"receiver {receiver.name!r} {fact.outcome} a delivery: {fact.reason}"
        self._recorder.record(object_ref(receiver.owner), reason, message, type_, series=True)

    @property
    def on_delivery(self) -> OnDelivery:
        """Called (synchronously; it must not block) with every delivery outcome."""
        return self.handler.on_delivery

    @on_delivery.setter
    def on_delivery(self, hook: OnDelivery) -> None:
        self.handler.on_delivery = hook

    def _readiness(self) -> str | None:
        """Receivers loaded, and Kafka connected — unless a spool takes the pushes
        (then an outage is :meth:`_degraded`, not unready: docs/bus.md). Not ready
        when neither takes them (Kafka down and the spool refusing: full, too old,
        disk full): pushes would get 503 here as they would without a spool."""
        publisher = self.publisher.readiness()
        if self.spool is not None and publisher is not None:
            publisher = f"{publisher}; {self.spool.refused}" if self.spool.refused else None
        reasons = [r for r in (self.registry.readiness(), publisher) if r]
        return "; ".join(reasons) or None

    def _degraded(self) -> str | None:
        """While spooling (or Kafka is unreachable with a spool to take pushes)."""
        if self.spool is None or self.forwarder is None:
            return None
        kafka_error = self.forwarder.last_error or self.publisher.last_error
        why = f"Kafka unavailable ({kafka_error})" if kafka_error else "draining into Kafka"
        note = self.spool.degraded(why)
        if note is None and kafka_error:
            note = f"Kafka unavailable ({kafka_error}); new pushes are spooled"
        return note

    async def _start(self) -> None:
        settings = self.settings
        if self._spool_ignored:
            log.warning("PUSHRELAY_SPOOL_DIR is ignored on the embedded bus (its log is "
                        "local and durable already)")
        if self.spool is not None:
            # First: a corrupt, foreign or locked spool stops the start before we listen.
            await self.spool.open()
        self._api = await new_api_client(settings.kubeconfig)
        self._recorder = EventRecorder(self._api, "pushrelay-ingress", max_rate=settings.event_qps)
        await self._recorder.start()
        await self.registry.start(self._api, self._recorder)
        await self.publisher.start()
        await self.deliveries.start()
        if self.forwarder is not None:
            await self.forwarder.start()
        for task in (self.registry.task, self.publisher.task,
                     self.forwarder.task if self.forwarder else None):
            if task is not None:
                self.watch(task)
        app = build_app(settings, self.handler, self._health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=LINGERING_TIME + 1,
                                     keepalive_timeout=settings.ingress_keepalive_timeout,
                                     lingering_time=LINGERING_TIME)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.ingress_host, settings.ingress_port,
                           ssl_context=self._ssl_context(), backlog=1024)
        await site.start()
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else settings.ingress_port
        log.info("ingress listening", extra={
            "host": settings.ingress_host, "port": self.port, "tls": bool(settings.tls_cert)})
        self._health_server = HealthServer(self._health, settings.health_host,
                                           settings.health_port, [openapi_route(settings)])
        await self._health_server.start()

    @property
    def health_port(self) -> int | None:
        """The bound health port (``/readyz``, ``/metrics``, ``/openapi.json``)."""
        return self._health_server.port if self._health_server is not None else None

    def _ssl_context(self) -> ssl.SSLContext | None:
        cert, key = self.settings.tls_cert, self.settings.tls_key
        if not cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key or None)
        return context

    async def _stop(self, deadline: Deadline) -> None:
        """Stop accepting; in-flight requests get what they can need (a slow body
        plus a publish, at most 60% of the budget); then the spool's forwarder
        finishes its batch (a third of what is left); flush delivery facts, the
        producer (half of what is left), close the spool, stop the informers,
        Events, close, and the health server last."""
        settings = self.settings
        health, self._health_server = self._health_server, None
        runner, self._runner = self._runner, None
        if runner is not None:
            for site in list(runner.sites):
                await site.stop()  # stop accepting connections
            self.handler.draining = True
            drain = deadline.share(0.6, at_most=settings.read_timeout
                                   + settings.publish_timeout + 1.0)
            if not await self.handler.drained(drain):
                log.warning("requests still in flight at shutdown; cancelling them")
            await runner.cleanup()  # close idle connections, cancel leftovers
        if self.forwarder is not None:  # before the producer it sends with
            await self.forwarder.stop(within=deadline.share(1 / 3))
        try:
            async with asyncio.timeout(deadline.share(0.2)):
                await self.deliveries.stop()
        except TimeoutError:
            log.warning("delivery facts not flushed before shutdown")
        await self.publisher.stop(within=deadline.share(0.5))  # flush
        await close_all(
            # no request and no forwarder uses it any more
            ("the spool", self.spool.close if self.spool else None),
            ("the receiver informers", self.registry.stop),
            ("the Event recorder", self._recorder.stop if self._recorder else None),
            ("the Kubernetes client", self._api.close if self._api else None),
            # last: probes and scrapes see the shutdown until the end
            ("the health server", health.stop if health else None),
            within=deadline.remaining())


def create(settings: IngressSettings, health_services: Sequence[Service] | None = None,
           *, bus: Bus | None = None) -> IngressService:
    """Entry point used by ``pushrelay ingress`` / ``python -m ingress``."""
    return IngressService(settings, health_services, bus=bus)
