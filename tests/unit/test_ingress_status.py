"""status.webhookReceivers and the Ready condition: written only when they differ,
and never against another writer of them (Kargo's management controller)."""

from __future__ import annotations

from typing import Any

from ingress.status import FIELD_MANAGER, other_writers, plan_status, status_patch
from pushrelay.core.receivers import Owner, Receiver, Unserved

OWNER = Owner("ProjectConfig", "p", "p")
R1 = Receiver(OWNER, "r1", "p", "s", "/quay/aaa", "http://h/quay/aaa")
R2 = Receiver(OWNER, "r2", "p", "s2", "/quay/ccc", "http://h/quay/ccc")
KARGO = "kargo-management-controller"


def config(status: dict[str, Any] | None = None, *, managers: dict[str, Any] | None = None,
           version: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": "ProjectConfig",
                           "metadata": {"namespace": "p", "name": "p", "generation": 3}}
    if status is not None:
        obj["status"] = status
    if managers is not None:
        obj["metadata"]["managedFields"] = [
            {"manager": name, "operation": "Update", "subresource": "status",
             "fieldsV1": {"f:status": fields}} for name, fields in managers.items()]
    if version is not None:
        obj["metadata"]["resourceVersion"] = version
    return obj


def applied(status: dict[str, Any] | None, patch: dict[str, Any] | None) -> dict[str, Any]:
    """The status after a merge patch (lists are replaced whole)."""
    assert patch is not None
    return {**(status or {}), **patch["status"]}


def test_first_write_then_nothing_to_do() -> None:
    patch = status_patch(config(), [R1], [])
    status = applied(None, patch)
    assert status["webhookReceivers"] == [{"name": "r1", "path": "/quay/aaa",
                                           "url": "http://h/quay/aaa"}]
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Synced")
    assert ready["observedGeneration"] == 3 and ready["lastTransitionTime"]
    assert status_patch(config(status), [R1], []) is None


def test_unserved_receivers_make_ready_false_and_keep_other_conditions() -> None:
    other = {"type": "Healthy", "status": "True", "reason": "x", "message": "y"}
    current = applied({"conditions": [other]}, status_patch(config({"conditions": [other]}),
                                                            [R1], []))
    problem = Unserved(OWNER, "r2", "Secret p/s2 not found")
    status = applied(current, status_patch(config(current), [R1], [problem]))
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Healthy"] == other
    ready = conditions["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "SyncWebhookReceiversFailed"
    assert "'r2': Secret p/s2 not found" in ready["message"]
    assert status_patch(config(status), [R1], [problem]) is None


def test_rotation_changes_the_path_only() -> None:
    first = applied(None, status_patch(config(), [R1], []))
    rotated = Receiver(OWNER, "r1", "p", "s", "/quay/bbb", "http://h/quay/bbb")
    patch = status_patch(config(first), [rotated], [])
    assert patch is not None
    assert patch["status"]["webhookReceivers"][0]["path"] == "/quay/bbb"
    # The Ready condition did not change: it is not written at all.
    assert "conditions" not in patch["status"]


def test_the_write_is_conditional_on_the_version_it_was_computed_from() -> None:
    patch = status_patch(config(version="42"), [R1], [])
    assert patch is not None and patch["metadata"] == {"resourceVersion": "42"}


def test_another_writers_url_is_left_alone() -> None:
    """Kargo's controller wrote its own url for our receiver: not rewritten."""
    theirs = {"name": "r1", "path": "/quay/aaa", "url": "https://kargo.example.com/quay/aaa"}
    status = {"webhookReceivers": [theirs]}
    obj = config(status, managers={KARGO: {"f:webhookReceivers": {}}})
    plan = plan_status(obj, [R1], [])
    assert plan.others == (KARGO,)
    assert plan.patch is not None and "webhookReceivers" not in plan.patch["status"]
    # ... and with the Ready condition theirs too, nothing is written at all
    obj = config(status, managers={KARGO: {"f:webhookReceivers": {},
                                           "f:conditions": {'k:{"type":"Ready"}': {}}}})
    assert plan_status(obj, [R1], []).patch is None


def test_another_writers_entries_are_kept_and_a_missing_one_filled_in_once() -> None:
    github = {"name": "gh", "path": "/github/xyz", "url": "https://k/github/xyz"}
    stale = {"name": "r1", "path": "/quay/old", "url": "https://k/quay/old"}
    managers = {KARGO: {"f:webhookReceivers": {}, "f:conditions": {}}}
    obj = config({"webhookReceivers": [github, stale]}, managers=managers)
    plan = plan_status(obj, [R1, R2], [])
    assert plan.patch is not None
    assert plan.patch["status"] == {"webhookReceivers": [github, stale, R2.details()]}
    assert plan.filled == (("r2", "/quay/ccc"),)
    # The other writer removed it again: it stays removed (no fight).
    again = plan_status(obj, [R1, R2], [], filled_before=plan.filled)
    assert again.patch is None and again.others == (KARGO,)


def test_our_own_entries_are_ours_to_rewrite() -> None:
    ours = {"name": "r1", "path": "/quay/aaa", "url": "http://old-base/quay/aaa"}
    obj = config({"webhookReceivers": [ours]},
                 managers={FIELD_MANAGER: {"f:webhookReceivers": {}}})
    plan = plan_status(obj, [R1], [])
    assert plan.others == ()
    assert plan.patch is not None
    assert plan.patch["status"]["webhookReceivers"] == [R1.details()]


def test_other_writers_reads_managed_fields_defensively() -> None:
    obj = config()
    obj["metadata"]["managedFields"] = [
        None, {"manager": None}, {"manager": "x", "fieldsV1": None},
        {"manager": "y", "fieldsV1": {"f:status": None}},
        {"manager": "z", "fieldsV1": {"f:status": {"f:conditions": {'k:{"type":"Other"}': {}}}}},
    ]
    assert other_writers(obj) == {"webhookReceivers": [], "Ready": []}


def test_null_status_fields_are_absent() -> None:
    for status in ({"webhookReceivers": None, "conditions": None}, None,
                   {"webhookReceivers": [None, 3], "conditions": [None]}):
        obj = config()
        obj["status"] = status
        patch = status_patch(obj, [R1], [])
        assert patch is not None and patch["status"]["webhookReceivers"] == [R1.details()]
