"""Delivery visibility: the facts each stage records, folded into one row per delivery.

What happened to each webhook delivery (docs/contracts.md, "Delivery
visibility"): the ingress records *accepted* or *rejected* (with the reason),
or *spooled* (Kafka could not take it; its spool's forwarder records
*accepted*, with ``spooled_at``, once it is in Kafka),
the router *matched N* Warehouses, the refresher *refreshed* or *failed* per
Warehouse. Facts are keyed ``<delivery>/<stage>[/<warehouse>]`` so each one
survives compaction of the deliveries topic on its own; :func:`fold` turns
facts, in any order, back into :class:`Delivery` rows. Pure: the Kafka side is
:mod:`pushrelay.infra.deliveries`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pushrelay.core.events import now

Outcome = Literal["accepted", "spooled", "rejected", "matched", "refreshed", "dropped",
                  "failed"]
#: What a delivery of a push without tags says (every subscriber is refreshed).
NO_TAGS = "no tags: every subscriber refreshed"
Stage = Literal["ingress", "router", "refresher"]


class DeliveryFact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    schema_: Literal["pushrelay.delivery/v1"] = Field("pushrelay.delivery/v1", alias="schema")
    delivery: str
    stage: Stage
    outcome: Outcome
    at: datetime = Field(default_factory=now)
    receiver: str | None = None
    project: str | None = None
    repository: str | None = None
    tags: list[str] = Field(default_factory=list)
    reason: str | None = None
    warehouses: list[str] = Field(default_factory=list)
    test_notification: bool = False
    #: router: subscriptions in scope on the pushed repository (with ``reason``,
    #: the first one's reason not to qualify, when nothing matched).
    subscriptions: int | None = None
    #: ingress ``accepted`` by the spool's forwarder: when the push was spooled
    #: (the ``spooled`` fact shares this fact's key, so compaction keeps only this one).
    spooled_at: datetime | None = None

    @property
    def key(self) -> bytes:
        suffix = f"/{self.warehouses[0]}" if self.stage == "refresher" and self.warehouses else ""
        return f"{self.delivery}/{self.stage}{suffix}".encode()


class Delivery(BaseModel):
    """One delivery, folded from its facts."""

    delivery: str
    received_at: datetime | None = None
    receiver: str | None = None
    project: str | None = None
    repository: str | None = None
    tags: list[str] = Field(default_factory=list)
    outcome: str = "unknown"
    reason: str | None = None
    matched: list[str] = Field(default_factory=list)
    refreshed: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    test_notification: bool = False
    subscriptions: int | None = None
    match_reason: str | None = None
    #: Seconds the push waited in the ingress's spool before Kafka took it
    #: (None: never spooled, or still spooled when ``outcome == "spooled"``).
    spooled_seconds: float | None = None

    def summary(self) -> str:
        if self.outcome == "spooled":
            return "spooled (waiting for Kafka)"
        text = self._summary()
        if self.spooled_seconds is None:
            return text
        return f"{text} (spooled {self.spooled_seconds:.0f} s)"

    def _summary(self) -> str:
        if self.outcome == "rejected":
            return f"rejected: {self.reason}"
        if self.outcome == "failed" and not self.matched:
            return f"failed: {self.reason}"
        if self.failed:
            text = f"failed {len(self.failed)}/{len(self.matched)}: {self.reason or ''}".strip()
        elif self.refreshed:
            text = f"refreshed {len(self.refreshed)}/{len(self.matched)}"
        elif self.outcome in ("matched", "refreshed"):
            text = f"matched {len(self.matched)} warehouses"
            if not self.matched:
                why = self.why_none()
                return f"{text}: {why}" if why else text
        else:
            return self.outcome
        return f"{text} ({NO_TAGS})" if self.no_tags else text

    @property
    def no_tags(self) -> bool:
        """The ingress accepted a push that carried no tags."""
        return self.received_at is not None and not self.tags

    def why_none(self) -> str | None:
        """Why a routed delivery matched no Warehouse (None if the router did not say)."""
        if self.test_notification:
            return ("Quay test notification (its sample tags "
                    f"{', '.join(self.tags) or 'none'} qualify for no subscription)")
        if self.subscriptions is None:
            return None
        if self.subscriptions == 0:
            return "no Warehouse in scope subscribes to this repository"
        hint = f"pushrelay explain {self.repository or 'REPO'} {self.tags[0] if self.tags else ''}"
        if self.project:
            hint += f" --project {self.project}"
        return (f"{self.subscriptions} subscription(s), but no pushed tag qualified "
                f"(first: {self.match_reason or 'not qualified'}); see `{hint.strip()}`")


def fold(facts: Iterable[DeliveryFact]) -> list[Delivery]:
    """Facts, in any order (stages' clocks race by milliseconds) → deliveries, newest first."""
    rows: dict[str, Delivery] = {}
    ingress: dict[str, str] = {}
    routed: set[str] = set()
    for fact in sorted(facts, key=lambda f: f.at):
        row = rows.setdefault(fact.delivery, Delivery(delivery=fact.delivery))
        if fact.stage == "ingress":
            # A forwarded spooled push: received when spooled, not when forwarded.
            row.received_at = fact.spooled_at or fact.at
            if fact.spooled_at is not None:
                row.spooled_seconds = max(0.0, (fact.at - fact.spooled_at).total_seconds())
            row.receiver, row.project = fact.receiver, fact.project
            row.repository, row.tags = fact.repository, list(fact.tags)
            # The forwarder cannot tell a test notification (not in the event): keep it.
            row.test_notification = row.test_notification or fact.test_notification
            ingress[fact.delivery] = fact.outcome
            if fact.outcome != "accepted":
                row.reason = fact.reason
        elif fact.stage == "router":
            routed.add(fact.delivery)
            row.matched = list(fact.warehouses)
            row.subscriptions, row.match_reason = fact.subscriptions, fact.reason
            row.receiver = row.receiver or fact.receiver
            row.project = row.project or fact.project
        elif fact.outcome == "refreshed":
            row.refreshed = sorted(set(row.refreshed) | set(fact.warehouses))
        else:
            row.failed = sorted(set(row.failed) | set(fact.warehouses))
            row.reason = fact.reason
    for delivery, row in rows.items():
        first = ingress.get(delivery, "unknown")
        if first in ("rejected", "failed"):
            row.outcome = first
        elif row.failed:
            row.outcome = "failed"
        elif row.refreshed:
            row.outcome = "refreshed"
        elif delivery in routed:
            row.outcome = "matched"
        else:
            row.outcome = first
    return _newest_first(rows.values())


def _newest_first(rows: Iterable[Delivery]) -> list[Delivery]:
    def when(row: Delivery) -> float:
        return row.received_at.timestamp() if row.received_at else 0.0
    return sorted(rows, key=when, reverse=True)


def parse_fact(raw: bytes | None) -> DeliveryFact | None:
    if not raw:
        return None
    try:
        return DeliveryFact.model_validate_json(raw)
    except ValidationError:
        return None
