"""The devstack's node, its pure parts: configs, flags, the pause image, certificates."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import tarfile
from pathlib import Path

import pytest
from cryptography import x509

from pushrelay.cli.main import main
from pushrelay_devstack import containerd, hostnet, kafka, kube, node, pause
from pushrelay_devstack.certs import Pki, ensure_pki
from pushrelay_devstack.paths import StatePaths
from pushrelay_devstack.stack import Devstack


def test_cni_config_keeps_pods_on_the_bridge(tmp_path: Path) -> None:
    conf = hostnet.cni_conflist(tmp_path)
    bridge = conf["plugins"][0]  # type: ignore[index]
    assert bridge["bridge"] == hostnet.BRIDGE and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": hostnet.POD_CIDR, "gateway": hostnet.GATEWAY}]]
    assert ipaddress.ip_address(hostnet.GATEWAY) in ipaddress.ip_network(hostnet.POD_CIDR)
    assert ipaddress.ip_address(hostnet.KUBERNETES_SERVICE_IP) in ipaddress.ip_network(
        hostnet.SERVICE_CIDR)


def test_kubelet_config_for_this_machine(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    cfg = node.kubelet_config(paths, Pki(tmp_path / "pki"), 10250, 10248)
    assert cfg["failCgroupV1"] is False and cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["address"] == hostnet.GATEWAY and cfg["readOnlyPort"] == 0
    assert cfg["authentication"]["anonymous"]["enabled"] is False  # type: ignore[index]
    assert cfg["authorization"] == {"mode": "Webhook"}
    assert cfg["containerRuntimeEndpoint"] == f"unix://{containerd.socket(tmp_path)}"


def test_containerd_config_is_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containerd, "binary", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(containerd, "snapshotter", lambda state: "native")
    toml = containerd.config_toml(tmp_path, pause.REF)
    assert f'address = "{tmp_path / "containerd" / "containerd.sock"}"' in toml
    assert f'root = "{tmp_path / "containerd" / "root"}"' in toml
    assert f'sandbox_image = "{pause.REF}"' in toml and 'snapshotter = "native"' in toml
    assert "SystemdCgroup = false" in toml


def test_apiserver_flags_with_a_node(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    loopback = kube.apiserver_argv(Path("kube-apiserver"), pki, 6443, 2379)
    assert "--disable-admission-plugins=ServiceAccount" in loopback
    assert "--bind-address=127.0.0.1" in loopback
    with_node = kube.apiserver_argv(Path("kube-apiserver"), pki, 6443, 2379, ["--v=3"],
                                    hostnet.GATEWAY)
    assert f"--advertise-address={hostnet.GATEWAY}" in with_node
    assert "--kubelet-preferred-address-types=InternalIP" in with_node
    assert not any(a.startswith("--disable-admission-plugins") for a in with_node)
    plugins = next(a for a in with_node if a.startswith("--enable-admission-plugins="))
    assert "ServiceAccount" in plugins and "NodeRestriction" in plugins
    assert with_node[-1] == "--v=3"  # extra args still last


def test_controller_manager_runs_everything_with_a_node(tmp_path: Path) -> None:
    args = kube.controller_manager_node_args(Pki(tmp_path))
    assert "--controllers=*" in args
    assert f"--root-ca-file={tmp_path / 'ca.crt'}" in args


def test_kafka_node_listener() -> None:
    props = kafka.listener_props(9092, 9093, (hostnet.GATEWAY, 9094))
    assert props["advertised.listeners"] == (
        f"PLAINTEXT://127.0.0.1:9092,NODE://{hostnet.GATEWAY}:9094")
    assert "CONTROLLER://127.0.0.1:9093" in props["listeners"]
    assert "NODE:PLAINTEXT" in props["listener.security.protocol.map"]
    assert "NODE" not in kafka.listener_props(9092, 9093)["listeners"]


def test_serving_cert_names_the_node_and_the_service(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    first = pki.serving_cert.read_bytes()
    ensure_pki(tmp_path)
    assert pki.serving_cert.read_bytes() == first  # kept while it covers what is asked
    ensure_pki(tmp_path, node.SERVING_SANS)
    cert = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in san.get_values_for_type(x509.DNSName)
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", hostnet.GATEWAY, hostnet.KUBERNETES_SERVICE_IP} <= ips


def test_pause_image_archive_is_a_docker_save() -> None:
    archive = tarfile.open(fileobj=io.BytesIO(pause.image_archive(b"\x7fELF-binary")))
    manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == [pause.REF]
    config_name = manifest[0]["Config"]
    config_bytes = archive.extractfile(config_name).read()  # type: ignore[union-attr]
    assert hashlib.sha256(config_bytes).hexdigest() + ".json" == config_name
    layer = archive.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    config = json.loads(config_bytes)
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    assert config["config"]["Entrypoint"] == ["/pause"]
    inner = tarfile.open(fileobj=io.BytesIO(layer))
    member = inner.getmember("pause")
    assert member.mode == 0o755
    assert inner.extractfile(member).read() == b"\x7fELF-binary"  # type: ignore[union-attr]


def test_containerd_names_of_docker_images() -> None:
    assert containerd.image_ref("pushrelay:latest") == "docker.io/library/pushrelay:latest"
    assert containerd.image_ref("pushrelay") == "docker.io/library/pushrelay:latest"
    assert containerd.image_ref("team/pushrelay:1") == "docker.io/team/pushrelay:1"
    assert containerd.image_ref("registry.example:5000/p:1") == "registry.example:5000/p:1"


def test_state_directory_remembers_the_node(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert Devstack(tmp_path).node is False
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "enabled").touch()  # what `up --node` leaves
    assert Devstack(tmp_path).node is True
    assert Devstack(tmp_path, node=False).node is False
    assert main(["devstack", "--state-dir", str(tmp_path), "status"]) == 1
    out = capsys.readouterr().out
    for name in node.COMPONENTS:
        assert name in out
