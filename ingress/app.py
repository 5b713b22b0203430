"""The ingress HTTP application (docs/contracts.md, "Ingress HTTP").

One catch-all route handles every path that is not a health or document route:

* a path that is not shaped like a receiver (``<base>/quay/<one segment>``) → 404;
* receivers not loaded yet → 503; unknown or malformed hash → 404 whatever the
  method (one dictionary lookup; the same body as any unknown path, the body is
  not read), as Kargo's server answers;
* any method but POST on a served receiver's path → 405;
* body over ``max_body_bytes`` → 413 from Content-Length, or while reading a
  chunked body; slower than ``read_timeout`` → 408; not a push payload → 400;
* Kafka acknowledged → 202; it did not within ``publish_timeout`` → the spool
  (when configured: 202 with ``X-Pushrelay-Spooled: true`` once fsync'd, see
  :mod:`ingress.durable`), else 503 + Retry-After.

Logs carry the delivery id, receiver name and the first 8 characters of its
hash, never the path or the secret. The access log is off for the same reason.
An accepted push is logged at DEBUG only (docs/decisions.md: at 200 pushes/s a
line per push was a write per push; ``pushrelay deliveries`` is where each
delivery is seen); rejected, spooled and failed ones stay at INFO / WARNING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import aiohttp
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import Counter

from ingress.payload import InvalidBody, OutgoingEvent, build_event, parse_push
from ingress.spool import Spooled
from pushrelay.core.deliveries import DeliveryFact, Outcome
from pushrelay.core.events import new_id
from pushrelay.core.receivers import QUAY, Receiver, base_path_of, join_path
from pushrelay.infra import metrics
from pushrelay.infra.logs import short_hash
from pushrelay.infra.runtime import Service, liveness_route
from pushrelay.infra.settings import IngressSettings

log = logging.getLogger(__name__)

DELIVERY_HEADER = "X-Pushrelay-Delivery"
SPOOLED_HEADER = "X-Pushrelay-Spooled"
INVALID_BODY = "invalid request body"
READ_CHUNK = 64 * 1024
#: On every response of the public app: no library versions to fingerprint
#: (set where each response is made: aiohttp only adds its own when absent).
SERVER = {"Server": "pushrelay"}

# Called with each delivery's outcome and the receiver it came through.
OnDelivery = Callable[[DeliveryFact, Receiver], None]


class Receivers(Protocol):
    def lookup(self, path: str) -> Receiver | None: ...
    def readiness(self) -> str | None: ...


class Publisher(Protocol):
    async def publish(self, event: OutgoingEvent) -> Spooled | None:
        """Return once ``event`` is durable: None in Kafka, :class:`Spooled` in the
        spool; raise the handler's ``publish_error`` when it is not."""
        ...


class Rejected(Exception):
    """A request refused before its body was parsed: status, client message, metric reason."""

    def __init__(self, status: int, error: str, reason: str, close: bool = False) -> None:
        super().__init__(error)
        self.status, self.error, self.reason, self.close = status, error, reason, close


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status,
                             headers={**SERVER, **headers} if headers else SERVER)


def _ignore(_: DeliveryFact, __: Receiver) -> None:
    return None


def _ids(receiver: Receiver, delivery: str) -> dict[str, str | None]:
    """What every log line about a delivery carries (never the path or the secret)."""
    return {"delivery": delivery, "receiver": receiver.name, "hash": receiver.short_hash,
            "project": receiver.project}


class WebhookHandler:
    """Handles every request to a receiver-shaped path."""

    def __init__(self, settings: IngressSettings, receivers: Receivers, publisher: Publisher,
                 on_delivery: OnDelivery | None = None,
                 publish_error: type[Exception] = Exception) -> None:
        self._settings = settings
        self._receivers = receivers
        self._publisher = publisher
        self._publish_error = publish_error
        self.prefix = join_path(base_path_of(settings.base_url), QUAY) + "/"
        self.on_delivery: OnDelivery = on_delivery or _ignore
        self._unavailable = {"Retry-After": str(settings.retry_after)}
        self._rejected: dict[str, Counter] = {}  # metrics.rejected's children, bound once
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    async def drained(self, within: float) -> bool:
        """Wait until no request is being handled; False if ``within`` s ran out first.

        aiohttp's own shutdown stops reading from connections at once, so a body
        still arriving would never complete: the service waits here first.
        """
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def shaped(self, path: str) -> bool:
        if not path.startswith(self.prefix):
            return False
        rest = path[len(self.prefix):]
        return bool(rest) and "/" not in rest

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self._active += 1
        self._idle.clear()
        try:
            try:
                response = await self._handle(request)
            except Exception:  # noqa: BLE001 - the one place that turns a bug into a 500
                log.exception("internal error", extra={"method": request.method})
                response = self._reject("internal", _error(500, "internal error"))
            if self.draining:
                response.force_close()  # no further requests on this connection
            return response
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        metrics.received.inc()
        path = request.path
        if not self.shaped(path):
            return self._reject("not_found", _error(404, "not found"))
        not_ready = self._receivers.readiness()
        if not_ready is not None:
            return self._reject("not_ready", _error(503, "receivers are not loaded yet",
                                                    self._unavailable))
        receiver = self._receivers.lookup(path)
        if receiver is None:
            log.debug("unknown receiver path", extra={"hash": short_hash(path)})
            return self._reject("not_found", _error(404, "not found"))
        if request.method != "POST":
            return self._reject("method", _error(405, "method not allowed", {"Allow": "POST"}))
        return await self._deliver(request, receiver, new_id())

    async def _deliver(self, request: web.Request, receiver: Receiver,
                       delivery: str) -> web.StreamResponse:
        try:
            body = await self._read_body(request)
            push = parse_push(body)
            event = build_event(push, project=receiver.project, receiver=receiver.name,
                                delivery=delivery)
        except InvalidBody as exc:
            self._record("rejected", receiver, delivery, reason=f"invalid body: {exc}")
            log.info("rejected push", extra={**_ids(receiver, delivery), "reason": str(exc)})
            return self._reject("invalid_body", _error(400, INVALID_BODY))
        except Rejected as exc:
            self._record("rejected", receiver, delivery, reason=f"{exc.reason}: {exc.error}")
            log.info("rejected push", extra={**_ids(receiver, delivery), "reason": exc.reason})
            response = _error(exc.status, exc.error)
            if exc.close:
                response.force_close()
            return self._reject(exc.reason, response)
        try:
            spooled = await self._publisher.publish(event)
        except self._publish_error as exc:
            self._record("failed", receiver, delivery, reason=f"Kafka unavailable: {exc}",
                         repository=push.docker_url, tags=push.tags)
            log.warning("could not publish push",
                        extra={**_ids(receiver, delivery), "reason": str(exc)})
            return self._reject("unavailable", _error(
                503, "the event could not be stored; retry later", self._unavailable))
        headers = {**SERVER, DELIVERY_HEADER: delivery}
        if spooled is None:
            self._record("accepted", receiver, delivery, repository=push.docker_url,
                         tags=push.tags, test=push.test_notification)
            level = logging.DEBUG
        else:
            headers[SPOOLED_HEADER] = "true"
            self._record("spooled", receiver, delivery, repository=push.docker_url,
                         tags=push.tags, test=push.test_notification,
                         reason=f"Kafka unavailable: {spooled.cause}")
            level = logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "spooled push" if spooled else "accepted push", extra={
                **_ids(receiver, delivery), "event": event.id, "repository": push.docker_url,
                "tags": len(push.tags), "test_notification": push.test_notification})
        # The id is 32 hex digits: the JSON is written directly (the hot path).
        return web.Response(body=b'{"msg":"accepted","delivery":"%s"}' % delivery.encode(),
                            status=202, content_type="application/json", headers=headers)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._settings.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise Rejected(413, f"request body exceeds {limit} bytes", "too_large", close=True)
        if (length is not None and request.content.is_eof()
                and hdrs.CONTENT_ENCODING not in request.headers):
            # The whole (uncompressed, Content-Length-checked) body is already
            # buffered, as for almost every push: no timeout to arm, no chunk loop.
            return await request.content.read()
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._settings.read_timeout):
                async for chunk in request.content.iter_chunked(READ_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise Rejected(413, f"request body exceeds {limit} bytes",
                                       "too_large", close=True)
                    chunks.append(chunk)
        except TimeoutError:
            raise Rejected(408, "request body not received in time", "read_timeout",
                           close=True) from None
        except (HttpProcessingError, aiohttp.ClientPayloadError, ConnectionError):
            raise InvalidBody("unreadable body") from None
        return b"".join(chunks)

    def _reject(self, reason: str, response: web.Response) -> web.Response:
        counter = self._rejected.get(reason)
        if counter is None:
            counter = self._rejected[reason] = metrics.rejected.labels(reason)
        counter.inc()
        return response

    def _record(self, outcome: Outcome, receiver: Receiver, delivery: str, *,
                reason: str | None = None, repository: str | None = None,
                tags: list[str] | None = None, test: bool = False) -> None:
        if self.on_delivery is _ignore:
            return
        try:
            self.on_delivery(DeliveryFact(
                delivery=delivery, stage="ingress", outcome=outcome, receiver=receiver.name,
                project=receiver.project, repository=repository, tags=tags or [],
                reason=reason, test_notification=test), receiver)
        except Exception:  # noqa: BLE001 - visibility must never fail a delivery
            log.exception("delivery hook failed", extra={"delivery": delivery})


def build_app(settings: IngressSettings, handler: WebhookHandler,
              health_services: Sequence[Service]) -> web.Application:
    """The public app: receiver paths and ``/healthz``; every other path is the
    handler's ordinary 404 (readiness, metrics and the OpenAPI document are on
    the health server).

    No middleware and no response signal (measured: together ~6 % of the
    ingress's CPU under saturation): the handler makes every response itself,
    JSON errors and the ``Server`` header included, and turns its own bugs into
    a logged 500; the one other route, ``/healthz``, is wrapped for the header.
    """
    # client_max_size guards any helper that reads the whole body (ours streams).
    app = web.Application(client_max_size=settings.max_body_bytes)
    live = liveness_route(health_services)

    async def healthz(request: web.Request) -> web.StreamResponse:
        response = await live.handler(request)
        response.headers.update(SERVER)
        return response

    app.add_routes([web.get(live.path, healthz),
                    web.route("*", "/{tail:.*}", handler.handle)])
    return app
