"""``status`` of ProjectConfig / ClusterConfig, as Kargo's controller writes it.

Only used with ``PUSHRELAY_WRITE_STATUS=true`` (devstack, demo, clusters where
Kargo's own controller does not own the status). ``status.webhookReceivers`` lists
the served receivers (``name``, ``path``, ``url``, in spec order) and the
``Ready`` condition says why the others are not served, with Kargo's reasons
(``Synced`` / ``SyncWebhookReceiversFailed``). Other conditions are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pushrelay.core.receivers import Receiver, Unserved

READY = "Ready"
SYNCED_MESSAGE = "{kind} is synced and ready for use"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(obj: dict[str, Any], unserved: Sequence[Unserved]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    condition: dict[str, Any] = {"type": READY}
    if unserved:
        problems = "; ".join(f"WebhookReceiver {u.name!r}: {u.reason}" for u in unserved)
        condition.update(status="False", reason="SyncWebhookReceiversFailed",
                         message=f"Failed to sync WebhookReceivers: {problems}"[:32768])
    else:
        condition.update(status="True", reason="Synced",
                         message=SYNCED_MESSAGE.format(kind=obj.get("kind") or "ProjectConfig"))
    if isinstance(meta.get("generation"), int):
        condition["observedGeneration"] = meta["generation"]
    return condition


def _same_condition(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    if a is None:
        return False
    keys = ("type", "status", "reason", "message", "observedGeneration")
    return all(a.get(k) == b.get(k) for k in keys)


def status_patch(
    obj: dict[str, Any], served: Sequence[Receiver], unserved: Sequence[Unserved],
) -> dict[str, Any] | None:
    """The merge patch that brings ``obj``'s status up to date, or None if it is."""
    status = obj.get("status") or {}
    current_receivers = status.get("webhookReceivers") or []
    desired_receivers = [r.details() for r in served]
    conditions = [c for c in (status.get("conditions") or []) if isinstance(c, dict)]
    current_ready = next((c for c in conditions if c.get("type") == READY), None)
    desired_ready = ready_condition(obj, unserved)
    same_ready = _same_condition(current_ready, desired_ready)
    if current_receivers == desired_receivers and same_ready:
        return None
    if current_ready is not None and current_ready.get("status") == desired_ready["status"]:
        desired_ready["lastTransitionTime"] = current_ready.get("lastTransitionTime") or _now()
    else:
        desired_ready["lastTransitionTime"] = _now()
    if same_ready and current_ready is not None:
        desired_ready = current_ready
    new_conditions = [desired_ready if c.get("type") == READY else c for c in conditions]
    if current_ready is None:
        new_conditions.append(desired_ready)
    return {"status": {"webhookReceivers": desired_receivers, "conditions": new_conditions}}
