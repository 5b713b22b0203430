"""Whatever the API server returns as ``null`` is absent, wherever we read API objects.

A just-created CRD's ``status.conditions``, a Warehouse's ``spec.subscriptions``,
a ProjectConfig's ``spec.webhookReceivers``, a Secret's ``data``, a watch event's
object, ``metadata.annotations``...: each reader is fed nulls (and wrong types)
and must neither raise nor invent anything.
"""

from __future__ import annotations

from typing import Any

import pytest

from ingress.secrets import trim_secret
from pushrelay.cli.visibility import _status_urls
from pushrelay.core.matching import WarehouseIndex
from pushrelay.core.receivers import owner_of, parse_receivers, receivers_for, secret_value
from pushrelay.infra.kube.fields import items, mapping, text
from pushrelay.infra.kube.informer import Informer, object_key
from pushrelay.infra.kube.resources import WAREHOUSE
from pushrelay_devstack import kubeapi
from pushrelay_devstack.kubeapi import MANAGED_BY, established, install_crds, is_ours
from router.index import trim

#: A value found at a path, and what ``text`` reads from it.
VALUES = [(None, ""), ("", ""), (0, "0"), (True, ""), ([], ""), ("text", "text"),
          ({"x": None}, "")]


@pytest.mark.parametrize(("value", "as_text"), VALUES)
def test_field_helpers_treat_null_and_wrong_types_as_absent(value: Any, as_text: str) -> None:
    obj = {"a": {"b": value}, "n": None}
    assert mapping(obj, "a", "b") == (value if isinstance(value, dict) else {})
    assert items(obj, "a", "b") == (value if isinstance(value, list) else [])
    assert text(obj, "a", "b") == as_text
    assert mapping(obj, "n", "deeper") == {} and items(None, "x") == [] and text(None, "x") == ""


def test_crd_conditions_null_is_not_established() -> None:
    assert not established({"status": {"conditions": None}})
    assert not established({"status": None})
    assert not established({"status": {"conditions": [None, {"type": None}]}})
    assert established({"status": {"conditions": [{"type": "Established", "status": "True"}]}})


def test_crd_labels_null_is_not_ours() -> None:
    assert not is_ours({"metadata": {"labels": None}})
    assert not is_ours({"metadata": None})
    assert is_ours({"metadata": {"labels": dict([MANAGED_BY])}})
    assert is_ours({"metadata": {"labels": {"app.kubernetes.io/part-of": "pushrelay-devstack"}}})


class FakeApi:
    """Answers like a freshly started API server: CRDs created, conditions null at first."""

    def __init__(self, existing: dict[str, dict[str, Any]]) -> None:
        self.existing = existing
        self.calls: list[tuple[str, str]] = []
        self.gets = 0

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        self.calls.append((method, path))
        name = path.rsplit("/", 1)[-1]
        if method == "POST":
            name = body["metadata"]["name"]
            if name in self.existing:
                return 409, {}
            self.existing[name] = body
            return 201, body
        if method == "PUT":
            self.existing[name] = body
            return 200, body
        self.gets += 1
        current = self.existing[name]
        ready = self.gets > 3  # the first answers carry "conditions": null
        return 200, {**current, "status": {"conditions": [
            {"type": "Established", "status": "True"}] if ready else None}}


def test_install_crds_waits_through_null_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubeapi.time, "sleep", lambda _: None)
    api = FakeApi({})
    names = install_crds(api, timeout=30)  # type: ignore[arg-type]
    assert len(names) == 3 and all(api.existing[n] for n in names)


def test_install_crds_leaves_a_foreign_crd_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubeapi.time, "sleep", lambda _: None)
    kargo = {"metadata": {"name": "warehouses.kargo.akuity.io", "labels": None,
                          "resourceVersion": "7"}, "spec": {"kargo": True}}
    ours = {"metadata": {"name": "projectconfigs.kargo.akuity.io", "resourceVersion": "8",
                         "labels": {"app.kubernetes.io/part-of": "pushrelay-devstack"}}}
    api = FakeApi({"warehouses.kargo.akuity.io": kargo, "projectconfigs.kargo.akuity.io": ours})
    said: list[str] = []
    install_crds(api, timeout=30, progress=said.append)  # type: ignore[arg-type]
    assert api.existing["warehouses.kargo.akuity.io"] is kargo  # not replaced
    assert ("PUT", f"{kubeapi._CRDS}/projectconfigs.kargo.akuity.io") in api.calls
    assert said == ["CRD warehouses.kargo.akuity.io is not ours (no "
                    "app.kubernetes.io/managed-by=pushrelay-devstack label): left as it is"]


def test_config_with_null_fields_declares_nothing() -> None:
    for obj in ({"metadata": None, "spec": None}, {"spec": {"webhookReceivers": None}},
                {"spec": {"webhookReceivers": [None, {"name": None, "quay": None},
                                               {"name": "r", "quay": {"secretRef": None}}]}}):
        owner_of(obj)
        found, problems = parse_receivers(obj)
        assert found == []
    _, problems = parse_receivers({"spec": {"webhookReceivers": [
        {"name": "r", "quay": {"secretRef": None}}]}})
    assert problems == [("r", "quay.secretRef.name is not set")]


def test_secret_with_null_data_is_reported_not_served() -> None:
    assert secret_value({"data": None}) == (None, "has no 'secret' data key")
    assert secret_value({"data": {"secret": None}}) == (None, "has no 'secret' data key")
    assert trim_secret({"metadata": None, "data": None}) == {"metadata": {}}
    config = {"kind": "ProjectConfig", "metadata": {"namespace": "p", "name": "p"},
              "spec": {"webhookReceivers": [{"name": "r", "quay": {"secretRef": {"name": "s"}}}]}}
    got = receivers_for(config, base_url="http://h", system_resources_namespace="k",
                        lookup=lambda ns, name: {"metadata": None, "data": None})
    assert got.served == [] and "has no 'secret' data key" in got.unserved[0].reason


def test_warehouse_with_null_fields_is_indexed_without_subscriptions() -> None:
    index = WarehouseIndex()
    for obj in ({"metadata": {"namespace": "a", "name": "w", "annotations": None},
                 "spec": {"subscriptions": None}},
                {"metadata": {"namespace": "a", "name": "x", "generation": None}, "spec": None},
                {"metadata": {"namespace": "a", "name": "y"},
                 "spec": {"subscriptions": [None, {"image": None}, {"image": {"repoURL": None}}]}}):
        index.upsert(obj)
        trimmed = trim(obj)
        assert isinstance(trimmed["spec"]["subscriptions"], list)
    assert len(index) == 3
    assert trim({"metadata": None, "spec": None}) == {"metadata": {}, "spec": {"subscriptions": []}}


def test_status_urls_with_null_fields() -> None:
    assert _status_urls({"status": None}) == {}
    assert _status_urls({"status": {"webhookReceivers": None}}) == {}
    assert _status_urls({"status": {"webhookReceivers": [None, {"name": "r", "url": None}]}}) == {}


def test_informer_tolerates_null_objects_and_metadata() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    informer = Informer(None, WAREHOUSE, lambda kind, obj: seen.append((kind, obj)))  # type: ignore[arg-type]
    assert object_key({"metadata": None}) == ("", "")
    version = informer._apply({"type": "ADDED", "object": None}, "5")
    assert version == "5" and not seen
    version = informer._apply({"type": "BOOKMARK", "object": {"metadata": None}}, "6")
    assert version == "6"
    informer._apply({"type": "ADDED", "object": {
        "metadata": {"namespace": "a", "name": "w", "resourceVersion": "9",
                     "annotations": None}, "spec": None}}, "6")
    assert [k for k, _ in seen] == ["ADDED"]
    with pytest.raises(Exception, match="watch error"):
        informer._apply({"type": "ERROR", "object": None}, "9")
