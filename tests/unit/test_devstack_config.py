"""Devstack configuration that needs no running service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pushrelay_devstack import kafka, kube
from pushrelay_devstack.certs import Pki, ensure_pki
from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.gobuild import staging_replaces
from pushrelay_devstack.kubeapi import crd_documents, write_kubeconfig
from pushrelay_devstack.paths import StatePaths, default_state_dir
from tests import devstack_fixtures as testing

GOMOD = """module k8s.io/kubernetes

require (
\tk8s.io/api v0.0.0
\tk8s.io/utils v0.0.0-20251002143259-bc988d571ff4
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
\tk8s.io/kube-aggregator => ./staging/src/k8s.io/kube-aggregator
)
"""


def test_staging_modules_pinned_to_matching_v0() -> None:
    assert staging_replaces(GOMOD, "v1.35.4") == [
        "\tk8s.io/api => k8s.io/api v0.35.4",
        "\tk8s.io/apiserver => k8s.io/apiserver v0.35.4",
        "\tk8s.io/kube-aggregator => k8s.io/kube-aggregator v0.35.4",
    ]


def test_kafka_config_is_single_node_kraft(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    kafka.write_config(paths, 19092, 19093)
    props = dict(
        line.split("=", 1) for line in paths.kafka_config.read_text().splitlines() if line
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "default.replication.factor"):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"


def test_cluster_ids_never_look_like_options() -> None:
    ids = {kafka._cluster_id() for _ in range(300)}
    assert len(ids) == 300
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_apiserver_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = Pki(tmp_path)
    argv = kube.apiserver_argv(Path("/bin/kas"), pki, 6443, 2379, ["--v=4"])
    assert "--authorization-mode=Node,RBAC" in argv
    assert "--bind-address=127.0.0.1" in argv
    assert f"--client-ca-file={pki.ca_cert}" in argv
    assert f"--service-account-signing-key-file={pki.sa_key}" in argv
    assert argv[-1] == "--v=4"  # extra args last, so they win
    monkeypatch.setenv(kube.EXTRA_ARGS_ENV, "--max-mutating-requests-inflight=1 --v=2")
    assert kube.extra_args_from_env() == ["--max-mutating-requests-inflight=1", "--v=2"]


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_crds() -> None:
    crds = {c["spec"]["names"]["kind"]: c for c in crd_documents()}
    assert set(crds) == {"Warehouse", "ProjectConfig", "ClusterConfig"}
    assert {c["spec"]["group"] for c in crds.values()} == {"kargo.akuity.io"}
    assert crds["ClusterConfig"]["spec"]["scope"] == "Cluster"
    assert crds["ProjectConfig"]["spec"]["versions"][0]["subresources"] == {"status": {}}
    sub = _schema(crds["Warehouse"])["properties"]["spec"]["properties"]["subscriptions"]["items"]
    image = sub["properties"]["image"]["properties"]
    for field in ("repoURL", "imageSelectionStrategy", "constraint", "semverConstraint",
                  "strictSemvers", "allowTagsRegexes", "ignoreTagsRegexes", "allowTags",
                  "ignoreTags"):
        assert field in image
    assert "enum" not in image["imageSelectionStrategy"]  # lenient on purpose
    assert "oneOf" not in sub
    status = _schema(crds["ProjectConfig"])["properties"]["status"]["properties"]
    assert set(status["webhookReceivers"]["items"]["properties"]) == {"name", "path", "url"}


def test_kubeconfig_is_self_contained(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    from pushrelay_devstack.certs import issue_client

    issue_client(pki, "bob", ("g",))
    path = write_kubeconfig(tmp_path / "kc", pki, 6443, "bob")
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "bob"
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert config["users"][0]["user"]["client-key-data"]
    assert path.stat().st_mode & 0o077 == 0


def test_state_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PUSHRELAY_DEVSTACK_DIR", str(tmp_path / "s"))
    assert default_state_dir() == tmp_path / "s"
    monkeypatch.delenv("PUSHRELAY_DEVSTACK_DIR")
    monkeypatch.setenv("PUSHRELAY_CACHE_DIR", str(tmp_path / "c"))
    assert default_state_dir() == tmp_path / "c" / "devstack"


def test_tests_refuse_a_non_loopback_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pki = ensure_pki(tmp_path)
    from pushrelay_devstack.certs import issue_client

    issue_client(pki, "admin")
    kc = write_kubeconfig(tmp_path / "kubeconfig", pki, 6443, "admin")
    kc.write_text(kc.read_text().replace("https://127.0.0.1:6443", "https://prod.example:6443"))
    monkeypatch.setenv("KUBECONFIG", str(kc))
    monkeypatch.setenv("PUSHRELAY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    with pytest.raises(DevstackError, match="not a loopback devstack"):
        testing.ensure_devstack()


def test_tests_reuse_a_loopback_devstack_from_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pki = ensure_pki(tmp_path / "pki")
    from pushrelay_devstack.certs import issue_client

    issue_client(pki, "admin")
    kc = write_kubeconfig(tmp_path / "kubeconfig", pki, 6443, "admin")
    monkeypatch.setenv("KUBECONFIG", str(kc))
    monkeypatch.setenv("PUSHRELAY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.delenv("PUSHRELAY_DEVSTACK_DIR", raising=False)
    env, stop = testing.ensure_devstack()
    stop()  # a no-op: not ours to stop
    assert env["KUBECONFIG"] == str(kc)
    assert testing.state_dir_of(env) == tmp_path


def test_ports_are_kept_while_free_and_pinned_ports_win(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    from pushrelay_devstack import ports

    path = tmp_path / "ports.json"
    first = ports.choose(path, running=[])
    assert len(set(first.values())) == len(ports.OWNERS)
    assert ports.choose(path, running=[]) == first  # all still free: kept
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", first["kafka"]))
        busy.listen()
        moved = ports.choose(path, running=[])
        assert moved["kafka"] != first["kafka"]
        assert ports.choose(path, running=["kafka"])["kafka"] == moved["kafka"]
        monkeypatch.setenv("PUSHRELAY_DEVSTACK_KAFKA_PORT", str(first["kafka"]))
        pinned = ports.choose(path, running=[])
        assert pinned["kafka"] == first["kafka"]
        with pytest.raises(DevstackError, match="already in use"):
            ports.require_free("kafka", pinned)
