"""The ingress service: receiver registry + Kafka publisher + HTTP server.

``create(settings)`` builds it; ``start()`` connects to Kubernetes, starts the
informers and the (background) Kafka connection, and listens at once: receivers
and ``/healthz`` on the public port (:attr:`IngressService.port`), ``/healthz``,
``/readyz`` (receivers loaded, producer connected), ``/metrics`` and
``/openapi.json`` on the health port (:attr:`IngressService.health_port`), for
every service of the process. ``stop()`` stops accepting, lets in-flight
requests finish, flushes the producer, stops the informers, and closes the
health port last; it is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence

from aiohttp import web
from kubernetes_asyncio.client import ApiClient

from ingress.app import OnDelivery, WebhookHandler, build_app
from ingress.openapi import openapi_route
from ingress.publisher import KafkaPublisher, PublishError
from ingress.registry import ReceiverRegistry, object_ref
from pushrelay.deliveries import DeliveryFact, DeliveryLog
from pushrelay.kube.client import new_api_client
from pushrelay.kube.events import EventRecorder
from pushrelay.receivers import Receiver
from pushrelay.runtime import HealthServer, Service
from pushrelay.settings import IngressSettings

log = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT = 75.0
# After a rejection with an unread body (413, 404), read and discard what the client
# still sends for this long so it can see the answer, then close.
LINGERING_TIME = 2.0


class IngressService:
    name = "ingress"

    def __init__(self, settings: IngressSettings,
                 health_services: Sequence[Service] | None = None) -> None:
        self.settings = settings
        self.crashed = asyncio.Event()
        self.port: int | None = None
        self.registry = ReceiverRegistry(settings)
        self.publisher = KafkaPublisher(settings)
        self.handler = WebhookHandler(settings, self.registry, self.publisher,
                                      publish_error=PublishError,
                                      on_delivery=self._on_delivery)
        self.deliveries = DeliveryLog(lambda: self.publisher.producer, settings)
        # all-in-one passes a list it fills later: keep the very same object.
        self._health = health_services if health_services is not None else [self]
        self._api: ApiClient | None = None
        self._recorder: EventRecorder | None = None
        self._runner: web.AppRunner | None = None
        self._health_server: HealthServer | None = None
        self._started = False
        self._stop_lock = asyncio.Lock()

    def _on_delivery(self, fact: DeliveryFact, receiver: Receiver) -> None:
        """Record the outcome for `pushrelay deliveries` and as an Event on the config."""
        self.deliveries.record(fact)
        if self._recorder is None:
            return
        if fact.outcome == "accepted":
            kind = "test notification" if fact.test_notification else "push"
            reason, type_ = "DeliveryAccepted", "Normal"
            message = f"receiver {receiver.name!r} accepted a {kind} of {fact.repository}"
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

    def readiness(self) -> str | None:
        if not self._started:
            return "not started"
        reasons = [r for r in (self.registry.readiness(), self.publisher.readiness()) if r]
        return "; ".join(reasons) or None

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        self._api = await new_api_client(settings.kubeconfig)
        self._recorder = EventRecorder(self._api, "pushrelay-ingress", max_rate=settings.event_qps)
        await self._recorder.start()
        await self.registry.start(self._api, self._recorder)
        await self.publisher.start()
        await self.deliveries.start()
        for task in (self.registry.task, self.publisher.task):
            if task is not None:
                task.add_done_callback(self._watch_task)
        app = build_app(settings, self.handler, self._health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=LINGERING_TIME + 1,
                                     keepalive_timeout=KEEPALIVE_TIMEOUT,
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

    def _drain_time(self) -> float:
        """In-flight requests get what they can need: a slow body plus a publish."""
        settings = self.settings
        return min(settings.read_timeout + settings.publish_timeout + 1.0,
                   settings.shutdown_timeout * 0.6)

    def _ssl_context(self) -> ssl.SSLContext | None:
        cert, key = self.settings.tls_cert, self.settings.tls_key
        if not cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key or None)
        return context

    def _watch_task(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("ingress task died", exc_info=error, extra={"task": task.get_name()})
            self.crashed.set()

    async def stop(self) -> None:
        async with self._stop_lock:
            runner, self._runner = self._runner, None
            if runner is not None:
                for site in list(runner.sites):
                    await site.stop()  # stop accepting connections
                self.handler.draining = True
                if not await self.handler.drained(self._drain_time()):
                    log.warning("requests still in flight at shutdown; cancelling them")
                await runner.cleanup()  # close idle connections, cancel leftovers
            await self.deliveries.stop()
            await self.publisher.stop()  # flush
            await self.registry.stop()
            recorder, self._recorder = self._recorder, None
            if recorder is not None:
                await recorder.stop()
            api, self._api = self._api, None
            if api is not None:
                await api.close()
            health, self._health_server = self._health_server, None
            if health is not None:
                await health.stop()


def create(settings: IngressSettings,
           health_services: Sequence[Service] | None = None) -> IngressService:
    return IngressService(settings, health_services)
