"""``status`` of ProjectConfig / ClusterConfig, as Kargo's controller writes it,
without ever fighting another writer of it.

Only used with ``PUSHRELAY_WRITE_STATUS=true`` (devstack, demo, clusters where
Kargo's own controller does not own the status). ``status.webhookReceivers`` lists
the served receivers (``name``, ``path``, ``url``, in spec order) and the
``Ready`` condition says why the others are not served, with Kargo's reasons
(``Synced`` / ``SyncWebhookReceiversFailed``). Other conditions are kept.

Another writer (Kargo's management controller, next to which pushrelay may run)
is recognised by ``metadata.managedFields``: a field manager other than
:data:`FIELD_MANAGER` owning ``status.webhookReceivers`` or the ``Ready``
condition. Then :func:`plan_status`

* leaves every entry of that list as it is, whatever its ``url`` (and its
  ``path``: that controller computes the same paths, and catches up itself);
* fills in a served receiver that has no entry at all, once per path: if the
  other writer removes it again, it stays removed (re-adding it would be a
  fight);
* leaves the ``Ready`` condition alone if the other writer owns it.

Without another writer the list is exactly the served receivers. Writes are
merge patches of the status subresource under our field manager, with the
object's ``resourceVersion`` as a precondition, so a write never overwrites a
change it has not seen (a 409 waits for the watch to deliver that change).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient

from pushrelay.core.receivers import CLUSTER_CONFIG_KIND, Owner, Receiver, Unserved
from pushrelay.infra.kube.client import merge_patch
from pushrelay.infra.kube.errors import Action, KubeError
from pushrelay.infra.kube.fields import items, mapping, text
from pushrelay.infra.kube.resources import CLUSTER_CONFIG, PROJECT_CONFIG

log = logging.getLogger(__name__)

READY = "Ready"
SYNCED_MESSAGE = "{kind} is synced and ready for use"
#: The field manager of every status write (``managedFields`` tells ours from others').
FIELD_MANAGER = "pushrelay"
_RECEIVERS = "f:webhookReceivers"
_CONDITIONS = "f:conditions"
_READY_KEY = 'k:{"type":"Ready"}'


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(obj: Mapping[str, Any], unserved: Sequence[Unserved]) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": READY}
    if unserved:
        problems = "; ".join(f"WebhookReceiver {u.name!r}: {u.reason}" for u in unserved)
        condition.update(status="False", reason="SyncWebhookReceiversFailed",
                         message=f"Failed to sync WebhookReceivers: {problems}"[:32768])
    else:
        condition.update(status="True", reason="Synced",
                         message=SYNCED_MESSAGE.format(kind=text(obj, "kind") or "ProjectConfig"))
    generation = mapping(obj, "metadata").get("generation")
    if isinstance(generation, int):
        condition["observedGeneration"] = generation
    return condition


def _same_condition(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    if a is None:
        return False
    keys = ("type", "status", "reason", "message", "observedGeneration")
    return all(a.get(k) == b.get(k) for k in keys)


def other_writers(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> dict[str, list[str]]:
    """Field managers other than ``manager`` owning ``status.webhookReceivers``
    (key ``"webhookReceivers"``) or the ``Ready`` condition (key ``"Ready"``)."""
    found: dict[str, list[str]] = {"webhookReceivers": [], READY: []}
    for entry in items(obj, "metadata", "managedFields"):
        name = text(entry, "manager")
        if not name or name == manager:
            continue
        status = mapping(entry, "fieldsV1", "f:status")
        if _RECEIVERS in status:
            found["webhookReceivers"].append(name)
        conditions = status.get(_CONDITIONS)
        # An atomic list is owned whole ({}); a list-map per entry (k:{"type":...}).
        if isinstance(conditions, Mapping) and (not conditions or _READY_KEY in conditions):
            found[READY].append(name)
    return found


@dataclass(frozen=True)
class StatusPlan:
    """What to write to one config's status, and what is left to others."""

    patch: dict[str, Any] | None  # the merge patch, None when nothing is to be written
    others: tuple[str, ...] = ()  # other writers whose fields are left alone
    filled: tuple[tuple[str, str], ...] = ()  # (name, path) added to another's list


def plan_status(
    obj: Mapping[str, Any], served: Sequence[Receiver], unserved: Sequence[Unserved], *,
    filled_before: Collection[tuple[str, str]] = (),
) -> StatusPlan:
    """The status write that brings ``obj`` up to date without fighting another writer.

    ``filled_before``: (name, path) entries this process already added to a list
    another writer owns; they are not added again.
    """
    status = mapping(obj, "status")
    current = [e for e in items(status, "webhookReceivers") if isinstance(e, Mapping)]
    owners = other_writers(obj)
    filled: list[tuple[str, str]] = []
    if owners["webhookReceivers"]:
        present = {text(e, "name") for e in current}
        receivers: list[Any] = list(current)
        for receiver in served:
            key = (receiver.name, receiver.path)
            if receiver.name not in present and key not in filled_before:
                receivers.append(receiver.details())
                filled.append(key)
    else:
        receivers = [r.details() for r in served]

    conditions = [c for c in items(status, "conditions") if isinstance(c, Mapping)]
    current_ready = next((c for c in conditions if c.get("type") == READY), None)
    new_conditions: list[Any] | None = None
    if not owners[READY]:
        desired = ready_condition(obj, unserved)
        if not _same_condition(current_ready, desired):
            same_status = (current_ready is not None
                           and current_ready.get("status") == desired["status"])
            desired["lastTransitionTime"] = (
                text(current_ready, "lastTransitionTime") if same_status else "") or _now()
            new_conditions = [desired if c.get("type") == READY else c for c in conditions]
            if current_ready is None:
                new_conditions.append(desired)

    others = tuple(sorted(set(owners["webhookReceivers"]) | set(owners[READY])))
    patch: dict[str, Any] = {}
    if receivers != current:
        patch["webhookReceivers"] = receivers
    if new_conditions is not None:
        patch["conditions"] = new_conditions
    if not patch:
        return StatusPlan(None, others)
    version = text(obj, "metadata", "resourceVersion")
    body: dict[str, Any] = {"status": patch}
    if version:  # a precondition: never overwrite a change not seen yet
        body["metadata"] = {"resourceVersion": version}
    return StatusPlan(body, others, tuple(filled))


def status_patch(
    obj: Mapping[str, Any], served: Sequence[Receiver], unserved: Sequence[Unserved],
) -> dict[str, Any] | None:
    """The merge patch of :func:`plan_status` (None if the status is up to date)."""
    return plan_status(obj, served, unserved).patch


@dataclass
class StatusWriter:
    """Writes the planned statuses; remembers what it wrote and what it was told."""

    api: ApiClient
    written: dict[Owner, str] = field(default_factory=dict)  # owner → version patched
    filled: dict[Owner, set[tuple[str, str]]] = field(default_factory=dict)
    told: set[tuple[Owner, tuple[str, ...]]] = field(default_factory=set)

    async def write(self, obj: Mapping[str, Any], owner: Owner, served: Sequence[Receiver],
                    unserved: Sequence[Unserved]) -> bool:
        """Bring one config's status up to date; True if a retry later is due."""
        plan = plan_status(obj, served, unserved, filled_before=self.filled.get(owner, ()))
        if plan.others and (owner, plan.others) not in self.told:
            self.told.add((owner, plan.others))
            log.info("another controller writes this status: its entries are left alone",
                     extra={"owner": str(owner), "managers": list(plan.others)})
        if plan.patch is None:
            self.written.pop(owner, None)
            return False
        version = text(obj, "metadata", "resourceVersion")
        if self.written.get(owner) == version:
            return False  # patched from this version already; the watch has not caught up
        resource = CLUSTER_CONFIG if owner.kind == CLUSTER_CONFIG_KIND else PROJECT_CONFIG
        namespace = owner.namespace if owner.kind != CLUSTER_CONFIG_KIND else None
        try:
            await merge_patch(self.api, resource, owner.name, plan.patch, namespace=namespace,
                              subresource="status", field_manager=FIELD_MANAGER)
        except KubeError as error:  # retried, dropped or reported; anything else is a bug
            if error.status == 409:  # changed meanwhile: the watch brings the new version
                log.debug("status changed meanwhile", extra={"owner": str(owner)})
                return False
            if error.action is Action.REJECT:
                self.written[owner] = version  # not again until the object changes
            log.warning("could not write status", extra={
                "owner": str(owner), "reason": error.reason})
            return error.action is Action.RETRY
        self.written[owner] = version
        self.filled.setdefault(owner, set()).update(plan.filled)
        log.info("wrote receiver status", extra={"owner": str(owner)})
        return False
