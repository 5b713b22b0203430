"""The publish path: Kafka, else the spool (docs/bus.md, "The ingress spool").

:meth:`DurablePublisher.publish` returns only once the event is durable, and
says where: ``None`` (Kafka acknowledged it) or :class:`Spooled` (the spool
fsync'd it, and why). It raises the direct publisher's :class:`PublishError`
(a 503) when neither took it:

* while the spool is :attr:`Spool.pending` (anything undrained, or an append in
  flight), every event goes to the spool, behind what is there: per-key order
  holds with respect to later events;
* otherwise, while the producer is known to be disconnected, at once to the
  spool; else it is published directly, and a :class:`PublishError` (no ack
  within ``publish_timeout``) sends it to the spool;
* the spool refusing (full, too old, disk full) is the 503, with both reasons.

Without a spool (``PUSHRELAY_SPOOL_DIR`` unset) it is the direct publisher.
"""

from __future__ import annotations

from typing import Protocol

from ingress.payload import OutgoingEvent
from ingress.publisher import PublishError
from ingress.spool import Spool, Spooled, SpoolRefused


class DirectPublisher(Protocol):
    #: False while the producer is known unable to take events (not connected
    #: yet, the last probe or send failed); ``last_error`` says why.
    connected: bool
    last_error: str | None

    async def publish(self, event: OutgoingEvent) -> None:
        """Return once Kafka acknowledged ``event``; raise :class:`PublishError` otherwise."""
        ...


class DurablePublisher:
    """A direct publisher with an optional spool behind it (see the module docstring)."""

    def __init__(self, direct: DirectPublisher, spool: Spool | None) -> None:
        self._direct = direct
        self._spool = spool

    async def publish(self, event: OutgoingEvent) -> Spooled | None:
        spool = self._spool
        if spool is None:
            await self._direct.publish(event)
            return None
        if spool.pending:
            return await self._append(spool, event, spool.cause or "events ahead in the spool")
        if not self._direct.connected:
            return await self._append(
                spool, event, f"not connected: {self._direct.last_error or 'unknown'}")
        try:
            await self._direct.publish(event)
        except PublishError as exc:
            return await self._append(spool, event, exc.reason)
        return None

    async def _append(self, spool: Spool, event: OutgoingEvent, cause: str) -> Spooled:
        try:
            await spool.append(event, cause)
        except SpoolRefused as exc:
            raise PublishError(f"{cause}; {exc}", disconnected=False) from None
        return Spooled(cause)
