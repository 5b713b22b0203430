"""status.webhookReceivers and the Ready condition, written only when they differ."""

from __future__ import annotations

from typing import Any

from ingress.status import status_patch
from pushrelay.core.receivers import Owner, Receiver, Unserved

OWNER = Owner("ProjectConfig", "p", "p")
R1 = Receiver(OWNER, "r1", "p", "s", "/quay/aaa", "http://h/quay/aaa")


def config(status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": "ProjectConfig",
                           "metadata": {"namespace": "p", "name": "p", "generation": 3}}
    if status is not None:
        obj["status"] = status
    return obj


def test_first_write_then_nothing_to_do() -> None:
    patch = status_patch(config(), [R1], [])
    assert patch is not None
    status = patch["status"]
    assert status["webhookReceivers"] == [{"name": "r1", "path": "/quay/aaa",
                                           "url": "http://h/quay/aaa"}]
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Synced")
    assert ready["observedGeneration"] == 3 and ready["lastTransitionTime"]
    assert status_patch(config(status), [R1], []) is None


def test_unserved_receivers_make_ready_false_and_keep_other_conditions() -> None:
    other = {"type": "Healthy", "status": "True", "reason": "x", "message": "y"}
    first = status_patch(config({"conditions": [other]}), [R1], [])
    assert first is not None
    current = first["status"]
    problem = Unserved(OWNER, "r2", "Secret p/s2 not found")
    patch = status_patch(config(current), [R1], [problem])
    assert patch is not None
    conditions = {c["type"]: c for c in patch["status"]["conditions"]}
    assert conditions["Healthy"] == other
    ready = conditions["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "SyncWebhookReceiversFailed"
    assert "'r2': Secret p/s2 not found" in ready["message"]
    assert status_patch(config(patch["status"]), [R1], [problem]) is None


def test_rotation_changes_the_path_only() -> None:
    first = status_patch(config(), [R1], [])
    assert first is not None
    rotated = Receiver(OWNER, "r1", "p", "s", "/quay/bbb", "http://h/quay/bbb")
    patch = status_patch(config(first["status"]), [rotated], [])
    assert patch is not None
    assert patch["status"]["webhookReceivers"][0]["path"] == "/quay/bbb"
    # The Ready condition did not change, so it is kept exactly (same transition time).
    assert patch["status"]["conditions"] == first["status"]["conditions"]
