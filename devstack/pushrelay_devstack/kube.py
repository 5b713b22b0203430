"""etcd and kube-apiserver processes on loopback."""

from __future__ import annotations

import json
import os
import shlex
import ssl
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pushrelay_devstack import hostnet, procs
from pushrelay_devstack.certs import Pki
from pushrelay_devstack.kubeapi import KubeHTTP
from pushrelay_devstack.paths import StatePaths

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
# Without a node: just enough controllers for namespace deletion to finish (and
# owner references to be honoured); no scheduler, no kubelet, no workloads.
CONTROLLERS = "namespace-controller,garbage-collector-controller"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
EXTRA_ARGS_ENV = "PUSHRELAY_DEVSTACK_APISERVER_ARGS"


def start_etcd(binary: Path, paths: StatePaths, port: int, peer_port: int) -> procs.ProcRecord:
    paths.etcd_data.mkdir(parents=True, exist_ok=True)
    paths.etcd_data.chmod(0o700)
    client = f"http://127.0.0.1:{port}"
    peer = f"http://127.0.0.1:{peer_port}"
    argv = [
        str(binary),
        "--name=devstack",
        f"--data-dir={paths.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devstack={peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync=true",  # a throwaway dev store: durability is not the point
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]
    return procs.start(ETCD, argv, log=paths.log(ETCD), record=paths.pid_record(ETCD), port=port)


def etcd_healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
        return bool(json.loads(resp.read()).get("health") == "true")


def wait_etcd(rec: procs.ProcRecord, timeout: float = 60) -> None:
    procs.wait_until(ETCD, lambda: etcd_healthy(rec.port), timeout=timeout, rec=rec,
                     what="healthy (/health)")


def extra_args_from_env() -> list[str]:
    return shlex.split(os.environ.get(EXTRA_ARGS_ENV, ""))


def apiserver_argv(
    binary: Path, pki: Pki, port: int, etcd_port: int, extra_args: Sequence[str] = (),
    node_ip: str | None = None,
) -> list[str]:
    """Flags for a single loopback apiserver. ``extra_args`` come last and win.

    With ``node_ip`` (a devstack with a node) it also listens on that address
    and advertises it (the ``kubernetes`` Service's endpoint, what pods reach),
    admits ServiceAccounts and Node restrictions, and reaches kubelets at their
    InternalIP with a client certificate of its own.
    """
    if node_ip is None:
        placement = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"]
        admission = ["--enable-admission-plugins=NamespaceLifecycle",
                     "--disable-admission-plugins=ServiceAccount"]
    else:
        placement = ["--bind-address=0.0.0.0", f"--advertise-address={node_ip}"]
        kubelet_client = "kube-apiserver-kubelet-client"
        admission = [
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,NodeRestriction",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki.client_cert(kubelet_client)}",
            f"--kubelet-client-key={pki.client_key(kubelet_client)}",
        ]
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        *placement,
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={hostnet.SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=false",
        *admission,
        f"--cert-dir={pki.dir / 'apiserver-generated'}",
        "--profiling=false",
        "--v=1",
        *extra_args,
    ]


def start_apiserver(
    binary: Path,
    paths: StatePaths,
    pki: Pki,
    port: int,
    etcd_port: int,
    extra_args: Sequence[str] = (),
    node_ip: str | None = None,
) -> procs.ProcRecord:
    argv = apiserver_argv(binary, pki, port, etcd_port, extra_args, node_ip)
    return procs.start(
        APISERVER, argv, log=paths.log(APISERVER), record=paths.pid_record(APISERVER), port=port
    )


def apiserver_ready(client: KubeHTTP) -> bool:
    status, body = client.request("GET", "/readyz")
    return status == 200 and body.strip() == b"ok"


def wait_apiserver(rec: procs.ProcRecord, client: KubeHTTP, timeout: float = 120) -> None:
    procs.wait_until(APISERVER, lambda: apiserver_ready(client), timeout=timeout, rec=rec,
                     what="ready (/readyz)", interval=0.5)


def controller_manager_node_args(pki: Pki) -> list[str]:
    """With a node: every controller (Deployments, ReplicaSets, endpoints, service
    account tokens, ...), each under its own ServiceAccount, and the CA that pods
    get in their ``kube-root-ca.crt`` ConfigMap."""
    return [
        "--controllers=*",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-account-private-key-file={pki.sa_key}",
        "--use-service-account-credentials=true",
    ]


def start_controller_manager(
    binary: Path, paths: StatePaths, port: int, kubeconfig: Path,
    node_args: Sequence[str] = (),
) -> procs.ProcRecord:
    argv = [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        *(node_args or [f"--controllers={CONTROLLERS}"]),
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={paths.pki / 'controller-manager-generated'}",
        "--concurrent-namespace-syncs=5",
        "--v=1",
    ]
    return procs.start(
        CONTROLLER_MANAGER, argv, log=paths.log(CONTROLLER_MANAGER),
        record=paths.pid_record(CONTROLLER_MANAGER), port=port,
    )


def controller_manager_healthy(port: int) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # its own self-signed serving cert, loopback only
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=2,
                                context=ctx) as resp:
        return bool(resp.read().strip() == b"ok")


def wait_controller_manager(rec: procs.ProcRecord, timeout: float = 60) -> None:
    procs.wait_until(CONTROLLER_MANAGER, lambda: controller_manager_healthy(rec.port),
                     timeout=timeout, rec=rec, what="healthy (/healthz)")
