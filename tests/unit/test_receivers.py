"""Receiver paths and URLs, byte for byte as Kargo computes them."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from pushrelay.core.receivers import (
    base_path_of,
    clean_path,
    index_receivers,
    join_path,
    parse_receivers,
    receiver_path,
    receiver_url,
    receivers_for,
    secret_value,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# (base URL, project, receiver name, secret) → (path, URL), produced by running
# Kargo's buildWebhookPath / getDetails code (Go net/url, crypto/sha256).
KARGO_VECTORS = [
    ("https://webhooks.kargo.example.com", "kargo-demo", "my-receiver", "s3cr3t",
     "/quay/0d17c5d5d449f969951c3a81db5057705cf42c699ae44e6bcf48847a68dafce1",
     "https://webhooks.kargo.example.com/quay/"
     "0d17c5d5d449f969951c3a81db5057705cf42c699ae44e6bcf48847a68dafce1"),
    ("http://localhost:8080", "", "cluster-receiver", "abc",
     "/quay/3ad7ae9625970e94f6c3898b197b92cdc76087025fbee5b64eb782f5172197e2",
     "http://localhost:8080/quay/"
     "3ad7ae9625970e94f6c3898b197b92cdc76087025fbee5b64eb782f5172197e2"),
    ("https://x.example.com/kargo/", "p", "n", "s",
     "/kargo/quay/128214ff83a2ea9275ac1c6a5de585a9057f33c5d4b5ce5ab5af3a749b83c017",
     "https://x.example.com/kargo/quay/"
     "128214ff83a2ea9275ac1c6a5de585a9057f33c5d4b5ce5ab5af3a749b83c017"),
    ("https://x.example.com/a//b/./c/../d", "p", "n", "s",
     "/a/b/d/quay/128214ff83a2ea9275ac1c6a5de585a9057f33c5d4b5ce5ab5af3a749b83c017",
     "https://x.example.com/a/b/d/quay/"
     "128214ff83a2ea9275ac1c6a5de585a9057f33c5d4b5ce5ab5af3a749b83c017"),
    ("https://x.example.com/a%20b/", "p", "n", "s",
     "/a%20b/quay/128214ff83a2ea9275ac1c6a5de585a9057f33c5d4b5ce5ab5af3a749b83c017",
     "https://x.example.com/a%2520b/quay/"
     "128214ff83a2ea9275ac1c6a5de585a9057f33c5d4b5ce5ab5af3a749b83c017"),
    ("https://x.example.com:8443/hooks?x=1", "proj", "name", "ünïcode",
     "/hooks/quay/45d9d0c7cfbd007c386ef8ee613d5942caafaffe7b7a1dc424a23018e97b4648",
     "https://x.example.com:8443/hooks/quay/"
     "45d9d0c7cfbd007c386ef8ee613d5942caafaffe7b7a1dc424a23018e97b4648?x=1"),
    ("https://x.example.com/../up", "p", "n", "s",
     "/up/quay/128214ff83a2ea9275ac1c6a5de585a9057f33c5d4b5ce5ab5af3a749b83c017",
     "https://x.example.com/up/quay/"
     "128214ff83a2ea9275ac1c6a5de585a9057f33c5d4b5ce5ab5af3a749b83c017"),
]


@pytest.mark.parametrize(("base_url", "project", "name", "secret", "path", "url"), KARGO_VECTORS)
def test_matches_kargo(base_url: str, project: str, name: str, secret: str,
                       path: str, url: str) -> None:
    got = receiver_path(base_path_of(base_url), project, name, secret)
    assert got == path
    assert receiver_url(base_url, got) == url
    assert got.endswith("/" + sha(project + name + secret))


def test_hash_is_sha256_of_concatenation() -> None:
    assert receiver_path("/", "proj", "recv", "topsecret") == "/quay/" + sha("projrecvtopsecret")
    # ClusterConfig receivers: project is the empty string.
    assert receiver_path("/", "", "recv", "topsecret") == "/quay/" + sha("recvtopsecret")
    # Raw secret bytes (not necessarily UTF-8) are hashed as they are.
    raw = b"\xff\x00bin"
    expected = hashlib.sha256(b"pn" + raw).hexdigest()
    assert receiver_path("/", "p", "n", raw) == f"/quay/{expected}"


@pytest.mark.parametrize(("path", "cleaned"), [
    ("", "."), ("/", "/"), ("//a//b/", "/a/b"), ("/a/./b/../c", "/a/c"), ("/../a", "/a"),
    ("a/../../b", "../b"), ("./", "."),
])
def test_clean_path_like_go(path: str, cleaned: str) -> None:
    assert clean_path(path) == cleaned


def test_join_path() -> None:
    assert join_path("/", "quay", "h") == "/quay/h"
    assert join_path("/base/", "quay", "h") == "/base/quay/h"
    assert join_path("base", "quay", "h") == "base/quay/h"
    assert join_path("/base", "quay/") == "/base/quay/"


def test_base_path_defaults_to_root() -> None:
    assert base_path_of("http://localhost:8080") == "/"
    assert base_path_of("https://h/x/y") == "/x/y"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(ns: str, name: str, data: dict[str, str] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"namespace": ns, "name": name}}
    if data is not None:
        obj["data"] = data
    return obj


def project_config(ns: str, receivers: list[Any], name: str | None = None) -> dict[str, Any]:
    return {"kind": "ProjectConfig", "metadata": {"namespace": ns, "name": name or ns},
            "spec": {"webhookReceivers": receivers}}


def quay(name: str, secret_name: str) -> dict[str, Any]:
    return {"name": name, "quay": {"secretRef": {"name": secret_name}}}


def test_secret_value() -> None:
    assert secret_value(None) == (None, "not found")
    assert secret_value(secret("a", "s", None))[1] == "has no 'secret' data key"
    assert secret_value(secret("a", "s", {"other": b64("x")}))[1] == "has no 'secret' data key"
    assert secret_value(secret("a", "s", {"secret": "!!notb64"}))[1] is not None
    assert secret_value(secret("a", "s", {"secret": ""}))[1] == "data key 'secret' is empty"
    assert secret_value(secret("a", "s", {"secret": b64("v")})) == (b"v", None)


def test_parse_receivers_skips_other_senders_and_reports_malformed() -> None:
    obj = project_config("p", [
        quay("ok", "s1"),
        {"name": "gh", "github": {"secretRef": {"name": "x"}}},
        {"quay": {"secretRef": {"name": "s"}}},
        {"name": "noref", "quay": {}},
        quay("ok", "s2"),
        "garbage",
    ])
    found, problems = parse_receivers(obj)
    assert [(c.name, c.secret_name) for c in found] == [("ok", "s1")]
    assert [name for name, _ in problems] == ["#2", "noref", "ok"]


def test_receivers_for_project_and_cluster() -> None:
    secrets = {
        ("proj", "s1"): secret("proj", "s1", {"secret": b64("one")}),
        ("proj", "nokey"): secret("proj", "nokey", {"token": b64("x")}),
        ("cluster-secrets", "cs"): secret("cluster-secrets", "cs", {"secret": b64("two")}),
    }

    def lookup(ns: str, name: str) -> dict[str, Any] | None:
        return secrets.get((ns, name))

    obj = project_config("proj", [quay("r1", "s1"), quay("r2", "missing"), quay("r3", "nokey")])
    got = receivers_for(obj, base_url="https://hooks.example.com/kargo",
                        system_resources_namespace="cluster-secrets", lookup=lookup)
    assert [r.name for r in got.served] == ["r1"]
    r1 = got.served[0]
    assert r1.path == "/kargo/quay/" + sha("projr1one")
    assert r1.url == "https://hooks.example.com" + r1.path
    assert r1.project == "proj" and r1.short_hash == sha("projr1one")[:8]
    assert r1.details() == {"name": "r1", "path": r1.path, "url": r1.url}
    reasons = {u.name: u.reason for u in got.unserved}
    assert reasons == {"r2": "Secret proj/missing not found",
                       "r3": "Secret proj/nokey has no 'secret' data key"}
    for reason in reasons.values():
        assert "one" not in reason

    cluster = {"kind": "ClusterConfig", "metadata": {"name": "cluster"},
               "spec": {"webhookReceivers": [quay("cr", "cs")]}}
    got = receivers_for(cluster, base_url="http://localhost:8080",
                        system_resources_namespace="cluster-secrets", lookup=lookup)
    assert [r.path for r in got.served] == ["/quay/" + sha("crtwo")]
    assert got.served[0].project is None
    assert got.served[0].secret_namespace == "cluster-secrets"


def test_project_config_name_must_equal_namespace() -> None:
    obj = project_config("proj", [quay("r1", "s1")], name="other")
    got = receivers_for(obj, base_url="http://h", system_resources_namespace="c",
                        lookup=lambda ns, n: secret(ns, n, {"secret": b64("x")}))
    assert not got.served and "must equal its namespace" in got.unserved[0].reason


def test_index_leaves_out_colliding_paths() -> None:
    def lookup(ns: str, name: str) -> dict[str, Any]:
        return secret(ns, name, {"secret": b64("s")})

    def build(ns: str, name: str) -> Any:
        return receivers_for(project_config(ns, [quay(name, "x")]), base_url="http://h",
                             system_resources_namespace="c", lookup=lookup)

    # "ab" + "c" and "a" + "bc" hash the same input.
    table, unserved = index_receivers([build("ab", "c"), build("a", "bc"), build("z", "y")])
    assert [r.name for r in table.values()] == ["y"]
    assert sorted(u.owner.namespace for u in unserved) == ["a", "ab"]
    assert all("collides" in u.reason for u in unserved)
