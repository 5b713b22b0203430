"""What happens after a patch attempt: offsets, metrics, Events, dead letters.

:class:`Reporter` is the engine's sink. It marks requests done in the commit
watermark only once their effect is durable (patched, dropped, or
dead-lettered with Kafka's ack), counts everything, and records one aggregated
Kubernetes Event per patch on the Warehouse naming the pushes behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pushrelay.core.deliveries import DeliveryFact, Outcome
from pushrelay.core.events import Cause, DeadLetter, WarehouseRef
from pushrelay.infra import metrics
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.events import EventRecorder, ObjectRef
from pushrelay.infra.kube.resources import WAREHOUSE
from refresher.engine import Item
from refresher.patcher import Patched, retry_reason
from refresher.watermark import Watermarks

log = logging.getLogger(__name__)

STAGE = "refresher"
MAX_CAUSES = 3
MAX_TAGS = 5

DeadLetterSender = Callable[[DeadLetter], Awaitable[None]]
FactRecorder = Callable[[DeliveryFact], None]


def _cause_text(cause: Cause) -> str:
    tags = ", ".join(cause.tags[:MAX_TAGS])
    if len(cause.tags) > MAX_TAGS:
        tags += f" (+{len(cause.tags) - MAX_TAGS} more)"
    pushed = f"tags [{tags}]" if cause.tags else "no tags (every subscriber refreshed)"
    return f"{cause.repo_url} {pushed} (delivery {cause.delivery or 'none'})"


def event_message(causes: Sequence[Cause]) -> str:
    """The Event message for one patch: its distinct pushes, newest first.

    Identical batches (a redelivered request, the same push twice) give the
    same message, so the recorder aggregates them into one Event with a count.
    """
    distinct: list[Cause] = []
    seen: set[tuple[str, tuple[str, ...], str | None]] = set()
    for cause in reversed(causes):
        mark = (cause.repo_url, tuple(cause.tags), cause.delivery)
        if mark not in seen:
            seen.add(mark)
            distinct.append(cause)
    text = "Refreshed for push to " + "; ".join(_cause_text(c) for c in distinct[:MAX_CAUSES])
    if len(distinct) > MAX_CAUSES:
        text += f"; and {len(distinct) - MAX_CAUSES} more pushes"
    return text


class Reporter:
    def __init__(
        self, marks: Watermarks[Any], *, recorder: EventRecorder | None,
        dead_letter: DeadLetterSender, facts: FactRecorder | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._marks = marks
        self._recorder = recorder
        self._dead_letter = dead_letter
        self._facts = facts
        self._wall = wall
        self.patched = 0
        self.dropped_requests = 0
        self.dead_lettered = 0

    def alive(self, item: Item) -> bool:
        return self._marks.owns(item.ticket)

    async def satisfied(self, ref: WarehouseRef, items: list[Item], patched: Patched,
                        seconds: float) -> None:
        self._marks.done_all(i.ticket for i in items)
        self.patched += 1
        metrics.patched.inc()
        metrics.patch_latency.observe(seconds)
        if len(items) > 1:
            metrics.coalesced.inc(len(items) - 1)
        now = self._wall()
        for item in items:  # from the push's receipt (older producers: from routing)
            since = item.request.cause.received_at or item.request.requested_at
            metrics.end_to_end.observe(max(0.0, now - since.timestamp()))
        if self._recorder is not None:
            self._recorder.record(
                ObjectRef(WAREHOUSE, ref.namespace, ref.name, patched.uid), "Refreshed",
                event_message([i.request.cause for i in items]), series=True,
            )
        self._record_facts(ref, items, "refreshed")
        # DEBUG, not INFO: a log write per patch cost ~100 µs of CPU at 200/s on a
        # VM (docs/decisions.md); the delivery fact is the per-delivery record.
        log.debug("refreshed warehouse", extra={
            "warehouse": str(ref), "requests": len(items), "value": patched.value,
            "delivery": items[-1].request.cause.delivery, "event": items[-1].request.cause.event,
        })

    async def dropped(self, ref: WarehouseRef, items: list[Item], error: KubeError) -> None:
        self._marks.done_all(i.ticket for i in items)
        self.dropped_requests += len(items)
        metrics.dropped.inc(len(items))
        self._record_facts(ref, items, "dropped", f"Warehouse not found: {error.reason}")
        log.info("warehouse gone; requests dropped",
                 extra={"warehouse": str(ref), "requests": len(items), "reason": error.reason})

    async def rejected(self, ref: WarehouseRef, items: list[Item], error: KubeError) -> bool:
        reason = f"patch of Warehouse {ref} rejected: {error.reason}"
        for item in items:
            if not self.alive(item):
                continue
            try:
                await self.dead_letter_item(item, reason)
            except Exception as exc:  # noqa: BLE001 - retried: the requests stay pending
                log.warning("cannot dead-letter; will retry",
                            extra={"warehouse": str(ref), "error": f"{exc!r}"})
                return False
        if self._recorder is not None:
            self._recorder.record(ObjectRef(WAREHOUSE, ref.namespace, ref.name),
                                  "RefreshRejected", reason, "Warning")
        self._record_facts(ref, items, "failed", reason)
        return True

    async def dead_letter_item(self, item: Item, reason: str) -> None:
        """Dead-letter one request (Kafka-acked), then mark it done."""
        await self.dead_letter_raw(item.ticket, reason, item.raw, item.key)

    async def dead_letter_raw(self, ticket: Any, reason: str, raw: bytes | None,
                              key: bytes | None) -> None:
        tp = ticket.partition
        await self._dead_letter(DeadLetter(
            stage=STAGE, reason=reason[:1000] or "unknown",
            topic=getattr(tp, "topic", None), partition=getattr(tp, "partition", None),
            offset=ticket.offset,
            key=key.decode("utf-8", errors="replace") if key is not None else None,
            payload=(raw or b"")[:64 * 1024].decode("utf-8", errors="replace"),
        ))
        self.dead_lettered += 1
        metrics.dead_lettered.labels(stage=STAGE).inc()
        self._marks.done(ticket)

    def _record_facts(self, ref: WarehouseRef, items: list[Item], outcome: Outcome,
                      reason: str | None = None) -> None:
        """One delivery fact per distinct delivery behind this attempt
        (docs/contracts.md, "Delivery visibility")."""
        if self._facts is None:
            return
        seen: set[str] = set()
        for item in items:
            cause = item.request.cause
            if cause.delivery and cause.delivery not in seen:
                seen.add(cause.delivery)
                self._facts(DeliveryFact(
                    delivery=cause.delivery, stage=STAGE, outcome=outcome,
                    tags=list(cause.tags), reason=reason, warehouses=[str(ref)],
                ))

    def retrying(self, ref: WarehouseRef, items: list[Item], error: KubeError,
                 delay: float) -> None:
        metrics.retried.labels(reason=retry_reason(error)).inc()
        log.info("refresh failed; retrying", extra={
            "warehouse": str(ref), "requests": len(items), "reason": error.reason,
            "status": error.status, "retry_in": round(delay, 3),
        })
