"""Which Secrets' data the ingress reads (pure parts of ingress.secrets and receivers)."""

from __future__ import annotations

from typing import Any

from ingress.secrets import identity, plan, trim_secret
from pushrelay.core.receivers import secret_refs


def config(kind: str, namespace: str, name: str, *refs: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": namespace, "name": name},
            "spec": {"webhookReceivers": [
                {"name": f"r{i}", "quay": {"secretRef": {"name": ref}}}
                for i, ref in enumerate(refs)] + [
                {"name": "gh", "github": {"secretRef": {"name": "not-ours"}}}]}}


def test_secret_refs_follow_the_receivers_scope() -> None:
    project = config("ProjectConfig", "p", "p", "a", "b", "a")
    assert secret_refs(project, system_resources_namespace="sys") == {("p", "a"), ("p", "b")}
    cluster = config("ClusterConfig", "", "cluster", "c")
    assert secret_refs(cluster, system_resources_namespace="sys") == {("sys", "c")}
    # A ProjectConfig whose name is not its namespace serves nothing: nothing to read.
    assert secret_refs(config("ProjectConfig", "p", "q", "a"),
                       system_resources_namespace="sys") == set()


def test_plan_reads_new_and_changed_wanted_secrets_only() -> None:
    versions = {("p", "a"): "5", ("p", "b"): "7", ("x", "helm"): "9"}
    to_read, to_forget = plan({("p", "a"), ("p", "b"), ("p", "missing")}, versions,
                              {("p", "a"): "5", ("p", "b"): "6"})
    assert to_read == {("p", "b")}  # changed; "a" is current, "missing" does not exist
    assert to_forget == set()


def test_plan_forgets_deleted_and_unwanted_secrets() -> None:
    versions = {("p", "b"): "7"}
    to_read, to_forget = plan({("p", "a")}, versions, {("p", "a"): "5", ("p", "b"): "7"})
    assert to_read == set()
    assert to_forget == {("p", "a"), ("p", "b")}  # deleted; no longer wanted


def test_plan_rereads_a_recreated_secret() -> None:
    # Deleted and re-created between two syncs: a new resourceVersion.
    assert plan({("p", "a")}, {("p", "a"): "12"}, {("p", "a"): "5"})[0] == {("p", "a")}


def test_trimmed_objects_keep_identity_and_the_secret_key_only() -> None:
    obj = {"metadata": {"namespace": "p", "name": "a", "uid": "u", "resourceVersion": "3",
                        "labels": {"x": "y"}, "managedFields": [{}]},
           "data": {"secret": "czM=", "other": "b3RoZXI="}, "type": "Opaque"}
    assert trim_secret(obj) == {"metadata": {"namespace": "p", "name": "a", "uid": "u",
                                             "resourceVersion": "3"},
                                "data": {"secret": "czM="}}
    assert identity(obj) == {"metadata": {"namespace": "p", "name": "a", "uid": "u",
                                          "resourceVersion": "3"}}
    assert "data" not in trim_secret({"metadata": {}, "data": {"tls.crt": "eA=="}})
