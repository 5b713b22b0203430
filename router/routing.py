"""The router's pure core: consumed push-event records in, messages to produce out.

:func:`route_batch` decodes each record, routes it against a
:class:`~pushrelay.core.matching.WarehouseIndex` (docs/contracts.md,
"Matching") and returns one refresh request per matched Warehouse, one dead
letter per record that cannot be routed, and one ``matched`` delivery fact per
push that names its delivery (when nothing matched: how many subscriptions in
scope were on the repository, and the first one's reason not to qualify).
No I/O: the bus loop around it (:mod:`router.service`) produces the
messages, waits for the acks, and only then commits; tests and the benchmark
call this function directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pushrelay.core.deliveries import DeliveryFact
from pushrelay.core.events import InvalidEvent, PushEvent, decode_push, encode, encode_refresh
from pushrelay.core.matching import WarehouseIndex, event_urls, miss, route
from pushrelay.infra.bus.letters import dead_letter_for

log = logging.getLogger(__name__)

STAGE = "router"
#: Tags carried in one refresh request's cause (the rest only make it bigger).
MAX_CAUSE_TAGS = 100
#: Warehouse names kept in one delivery fact ("matched N" still counts them all).
MAX_FACT_WAREHOUSES = 1000


@dataclass(slots=True)
class Outgoing:
    """One message to produce: a refresh request, or a dead letter."""

    value: bytes
    key: bytes
    dead_letter: bool


def route_batch(index: WarehouseIndex, records: Iterable[Any],
                ) -> tuple[list[Outgoing], list[DeliveryFact]]:
    """Route consumed records (anything with ``value``, ``key``, ``topic``,
    ``partition``, ``offset``): the messages to produce and the delivery facts.

    Never raises for a record: an invalid event becomes a dead letter with the
    reason, and so does one that routing itself fails on (logged with its
    traceback): one poison event must not stall its partition. Dead letters keep
    the payload, so such an event can be replayed once the bug is fixed
    (docs/architecture.md, "Errors").
    """
    out: list[Outgoing] = []
    facts: list[DeliveryFact] = []
    for record in records:
        try:
            out += route_event(index, decode_push(record.value), facts)
        except InvalidEvent as exc:
            out.append(dead_letter(exc.reason, record))
        except Exception as exc:  # noqa: BLE001 - one poison event must not stall a partition
            log.exception("routing failed", extra={"offset": record.offset})
            out.append(dead_letter(f"routing failed: {exc}", record))
    return out, facts


def route_event(index: WarehouseIndex, event: PushEvent,
                facts: list[DeliveryFact]) -> list[Outgoing]:
    """The refresh requests for one valid push event (its fact appended to ``facts``)."""
    urls = event_urls(event.repo_urls, event.repository)
    matches = route(index, urls, event.tags, event.scope.project)
    out = []
    for match in matches:
        value, key = encode_refresh(
            match.namespace, match.name, event=event.id, repo_url=match.repo_url,
            tags=list(match.tags[:MAX_CAUSE_TAGS]), delivery=event.delivery,
            received_at=event.received_at)
        out.append(Outgoing(value, key, False))
    if event.delivery:
        # Nothing matched: say why (a second walk over the few subscriptions in scope).
        why = miss(index, urls, event.tags, event.scope.project) if not matches else None
        facts.append(DeliveryFact(
            delivery=event.delivery, stage="router", outcome="matched",
            receiver=event.receiver, project=event.scope.project,
            repository=event.repository[:1024], tags=event.tags[:MAX_CAUSE_TAGS],
            received_at=event.received_at,
            warehouses=[f"{m.namespace}/{m.name}" for m in matches[:MAX_FACT_WAREHOUSES]],
            subscriptions=why.subscriptions if why else None,
            reason=why.reason[:1000] if why and why.reason else None,
        ))
    # DEBUG, not INFO: one log write per event was ~7 % of the router's CPU under
    # load (docs/decisions.md); the delivery record says what each push matched.
    if log.isEnabledFor(logging.DEBUG):
        log.debug("routed push event", extra={
            "event": event.id, "delivery": event.delivery, "project": event.scope.project,
            "repository": event.repository[:256], "warehouses": len(matches)})
    return out


def dead_letter(reason: str, record: Any) -> Outgoing:
    """A record that cannot be routed, as a dead letter keyed like the record."""
    letter = dead_letter_for(STAGE, reason, record)
    log.warning("dead-lettering push event", extra={
        "reason": letter.reason, "partition": record.partition, "offset": record.offset})
    return Outgoing(encode(letter), (letter.key or letter.id).encode(), True)
