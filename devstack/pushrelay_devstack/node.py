"""A real Kubernetes node in the devstack: kubelet, kube-proxy, kube-scheduler.

Started by ``Devstack(node=True)`` after the control plane, in this order:
host network (:mod:`hostnet`), containerd (:mod:`containerd`) with the pause
image imported, kube-scheduler, kube-proxy (iptables mode), kubelet. The
kubelet registers the node ``NODE_NAME`` with the bridge address as its
InternalIP, authenticates as ``system:node:<name>`` (Node authorizer and
NodeRestriction admission apply) and serves its API (logs, exec) on the
bridge address to the apiserver's client certificate only.

:func:`drain` and :func:`cleanup_host` are the teardown: pods are deleted while
the kubelet still runs (so it stops their containers and removes their network
namespaces), then, once every process is stopped, kube-proxy's rules, leftover
shims, mounts under the state directory, the ``kubepods`` cgroups and the
bridge are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from pushrelay_devstack import containerd, gobuild, hostnet, pause, procs
from pushrelay_devstack.certs import Pki, issue_client
from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.kubeapi import KubeHTTP, write_kubeconfig
from pushrelay_devstack.paths import StatePaths

CONTAINERD = containerd.COMPONENT
KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
SCHEDULER = "kube-scheduler"
# start order (kube-proxy waits for the Node to exist)
COMPONENTS = (CONTAINERD, SCHEDULER, KUBELET, KUBE_PROXY)
NODE_NAME = "pushrelay-node"
NODE_USER = f"system:node:{NODE_NAME}"
KUBE_PROXY_USER = "system:kube-proxy"
SCHEDULER_USER = "system:kube-scheduler"
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"
# What the apiserver's serving certificate must name for pods to trust it.
SERVING_SANS = (
    hostnet.GATEWAY, hostnet.KUBERNETES_SERVICE_IP, "kubernetes", "kubernetes.default",
    "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
)
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def ensure_binaries(progress: gobuild.Progress) -> dict[str, Path]:
    return {name: gobuild.ensure_kube_command(name, progress)
            for name in (KUBELET, KUBE_PROXY, SCHEDULER)}


def ensure_identities(pki: Pki) -> None:
    """Client certificates of the node's components (issued once)."""
    for user, groups in ((NODE_USER, ("system:nodes",)), (KUBE_PROXY_USER, ()),
                         (SCHEDULER_USER, ()), (APISERVER_KUBELET_CLIENT, ("system:masters",))):
        if not pki.client_cert(user).exists():
            issue_client(pki, user, groups)


def _kubeconfig(paths: StatePaths, pki: Pki, apiserver_port: int, user: str) -> Path:
    folder = paths.root / "node" / "kubeconfigs"
    folder.mkdir(parents=True, exist_ok=True)
    return write_kubeconfig(folder / f"{user.replace(':', '-')}.kubeconfig", pki,
                            apiserver_port, user)


# ---- containerd ------------------------------------------------------------------

def start_containerd(paths: StatePaths) -> procs.ProcRecord:
    hostnet.setup(paths.root / "node")
    hostnet.write_cni_config(paths.root / "cni" / "net.d", paths.root / "cni" / "ipam")
    return containerd.start(paths.root, paths.log(CONTAINERD), paths.pid_record(CONTAINERD),
                            pause.REF)


def wait_containerd(rec: procs.ProcRecord, paths: StatePaths,
                    progress: gobuild.Progress) -> None:
    containerd.wait(rec, paths.root)
    if not containerd.has_image(paths.root, pause.REF):
        binary = pause.ensure_binary(progress)
        containerd.import_image(paths.root, pause.image_archive(binary.read_bytes()), pause.REF)


# ---- kube-scheduler ------------------------------------------------------------------

def start_scheduler(binary: Path, paths: StatePaths, pki: Pki, apiserver_port: int,
                    port: int) -> procs.ProcRecord:
    kubeconfig = _kubeconfig(paths, pki, apiserver_port, SCHEDULER_USER)
    argv = [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--v=1",
    ]
    return procs.start(SCHEDULER, argv, log=paths.log(SCHEDULER),
                       record=paths.pid_record(SCHEDULER), port=port)


def https_healthz(port: int) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the component's own self-signed cert, loopback only
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=2,
                                context=ctx) as resp:
        return bool(resp.read().strip() == b"ok")


def http_healthz(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return resp.status == 200


# ---- kube-proxy ------------------------------------------------------------------------

def kube_proxy_argv(binary: Path, kubeconfig: Path, healthz_port: int,
                    metrics_port: int) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        "--proxy-mode=iptables",
        f"--hostname-override={NODE_NAME}",
        f"--cluster-cidr={hostnet.POD_CIDR}",
        f"--nodeport-addresses={hostnet.GATEWAY}/32",
        f"--healthz-bind-address=127.0.0.1:{healthz_port}",
        f"--metrics-bind-address=127.0.0.1:{metrics_port}",
        # Leave the host's conntrack sysctls alone (a sandbox may refuse them).
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        "--v=1",
    ]


def start_kube_proxy(binary: Path, paths: StatePaths, pki: Pki, apiserver_port: int,
                     healthz_port: int, metrics_port: int) -> procs.ProcRecord:
    kubeconfig = _kubeconfig(paths, pki, apiserver_port, KUBE_PROXY_USER)
    argv = kube_proxy_argv(binary, kubeconfig, healthz_port, metrics_port)
    return procs.start(KUBE_PROXY, argv, log=paths.log(KUBE_PROXY),
                       record=paths.pid_record(KUBE_PROXY), port=healthz_port)


def kube_proxy_cleanup(binary: Path, log: Path) -> None:
    """``kube-proxy --cleanup``: remove every rule and chain kube-proxy created."""
    with log.open("ab") as out:
        out.write(b"\n=== kube-proxy --cleanup\n")
        out.flush()
        subprocess.run([str(binary), "--cleanup", "--v=1"], stdout=out, stderr=subprocess.STDOUT,
                       check=False, timeout=60)


# ---- kubelet ---------------------------------------------------------------------------

def kubelet_config(paths: StatePaths, pki: Pki, port: int, healthz_port: int) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": hostnet.GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{containerd.socket(paths.root)}",
        # This machine mounts cgroup v1; the kubelet refuses v1 unless told otherwise.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "clusterDomain": "cluster.local",
        "podLogsDir": str(paths.root / "node" / "pod-logs"),
        "volumePluginDir": str(paths.root / "node" / "volume-plugins"),
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "serializeImagePulls": False,
        "maxPods": 60,
        # A shared development disk: do not evict or garbage-collect images for space.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "shutdownGracePeriod": "0s",
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
    }


def start_kubelet(binary: Path, paths: StatePaths, pki: Pki, apiserver_port: int,
                  port: int, healthz_port: int) -> procs.ProcRecord:
    base = paths.root / "node"
    for d in ("kubelet", "pod-logs", "volume-plugins", "kubelet-pki"):
        (base / d).mkdir(parents=True, exist_ok=True)
    config = base / "kubelet-config.yaml"
    config.write_text(yaml.safe_dump(kubelet_config(paths, pki, port, healthz_port)))
    kubeconfig = _kubeconfig(paths, pki, apiserver_port, NODE_USER)
    argv = [
        str(binary),
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={base / 'kubelet'}",
        f"--cert-dir={base / 'kubelet-pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={hostnet.GATEWAY}",
        "--v=1",
    ]
    return procs.start(KUBELET, argv, log=paths.log(KUBELET), record=paths.pid_record(KUBELET),
                       port=port)


def node_ready(client: KubeHTTP) -> bool:
    status, body = client.json("GET", f"/api/v1/nodes/{NODE_NAME}")
    if status != 200:
        return False
    conditions = body.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def wait_node_ready(rec: procs.ProcRecord, client: KubeHTTP, timeout: float = 120) -> None:
    procs.wait_until(KUBELET, lambda: node_ready(client), timeout=timeout, rec=rec,
                     what=f"Ready (node {NODE_NAME})", interval=0.5)


# ---- teardown --------------------------------------------------------------------------

def _node_pods(client: KubeHTTP) -> list[tuple[str, str]]:
    status, body = client.json("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE_NAME}")
    if status != 200:
        raise DevstackError(KUBELET, f"cannot list the node's pods: HTTP {status}")
    return [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in body.get("items", [])]


def drain(client: KubeHTTP, *, kubelet_alive: bool, timeout: float = 90) -> int:
    """Delete every pod bound to the node; wait until the kubelet has removed them.

    Call with the scheduler already stopped (nothing new lands on the node).
    With a dead kubelet, pods are deleted at once (grace 0): nobody would
    confirm a graceful deletion. Returns how many pods were deleted.
    """
    pods = _node_pods(client)
    grace = {} if kubelet_alive else {"gracePeriodSeconds": 0}
    for ns, name in pods:
        client.json("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}",
                    {"apiVersion": "v1", "kind": "DeleteOptions", **grace})
    deadline = time.monotonic() + timeout
    while kubelet_alive and time.monotonic() < deadline and _node_pods(client):
        time.sleep(0.5)
    for ns, name in _node_pods(client):  # what the kubelet did not finish in time
        client.json("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}",
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
    return len(pods)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(root: Path) -> list[str]:
    """Unmount everything mounted below ``root`` (deepest first); return the points."""
    points = _mounts_under(root)
    for point in points:
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return points


def remove_kubepods_cgroups() -> list[Path]:
    """rmdir every ``kubepods`` cgroup tree (leaves first), in every hierarchy."""
    removed = []
    for hierarchy in ([_CGROUP_ROOT, *sorted(_CGROUP_ROOT.iterdir())]
                      if _CGROUP_ROOT.is_dir() else []):
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        removed.append(top)
    return removed


def delete_kube_chains() -> list[str]:
    """Every ``KUBE-*`` chain still there after ``kube-proxy --cleanup`` (the kubelet's
    ``KUBE-FIREWALL``, ``KUBE-IPTABLES-HINT``, canaries): jumps to it first, then it."""
    removed = []
    for table in ("filter", "nat", "mangle"):
        dump = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True,
                              check=False).stdout.splitlines()
        chains = [line[1:].split()[0] for line in dump if line.startswith(":KUBE-")]
        for line in dump:
            words = line.split()
            target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
            if words[:1] == ["-A"] and target.startswith("KUBE-") \
                    and not words[1].startswith("KUBE-"):
                subprocess.run(["iptables", "-w", "-t", table, "-D", *words[1:]],
                               capture_output=True, check=False)
        for chain in chains:
            subprocess.run(["iptables", "-w", "-t", table, "-F", chain], capture_output=True,
                           check=False)
        for chain in chains:
            subprocess.run(["iptables", "-w", "-t", table, "-X", chain], capture_output=True,
                           check=False)
            removed.append(f"{table}/{chain}")
    return removed


def cleanup_host(paths: StatePaths, kube_proxy_binary: Path | None) -> dict[str, object]:
    """After every node process stopped: leave nothing behind on the host."""
    report: dict[str, object] = {}
    report["shims_killed"] = containerd.stop_leftover_shims(paths.root)
    if kube_proxy_binary is not None:
        kube_proxy_cleanup(kube_proxy_binary, paths.log(KUBE_PROXY))
    report["chains_removed"] = delete_kube_chains()
    report["unmounted"] = len(unmount_all(paths.root))
    report["cgroups_removed"] = [str(p) for p in remove_kubepods_cgroups()]
    hostnet.teardown(paths.root / "node")
    (paths.root / "node" / "teardown.json").write_text(json.dumps(report, indent=2))
    return report
