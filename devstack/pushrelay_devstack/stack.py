"""The devstack: etcd + kube-apiserver + Kafka (KRaft) on loopback, for real.

With ``node=True`` it also runs a Kubernetes node (:mod:`pushrelay_devstack.node`):
containerd, kube-scheduler, kube-proxy and a kubelet, pods on a bridge of its own.

``Devstack(state_dir).up()`` builds or resolves what is missing (cached),
starts what is not running, installs the CRDs, writes ``kubeconfig`` and
``env`` and returns the environment. ``down()`` stops exactly the processes
recorded in ``<state>/run``. Components can be stopped and started one by one
(on the same ports) to test outages.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from pushrelay_devstack import containerd, gobuild, hostnet, kafka, kube, node, ports, procs
from pushrelay_devstack.certs import Pki, ensure_pki, issue_client
from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.kubeapi import (
    ADMIN_USER,
    KubeHTTP,
    ensure_admin,
    ensure_namespace,
    install_crds,
    write_kubeconfig,
)
from pushrelay_devstack.paths import StatePaths, default_state_dir

ETCD, APISERVER, KAFKA = kube.ETCD, kube.APISERVER, kafka.COMPONENT
CONTROLLER_MANAGER = kube.CONTROLLER_MANAGER
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER, KAFKA)  # stop order is the reverse
#: Kargo's system-resources namespace (ClusterConfig receiver Secrets), and the
#: deprecated cluster-secrets namespace its migration copies from.
NAMESPACES = ("kargo-system-resources", "kargo-cluster-secrets")


def _stderr(msg: str) -> None:
    print(f"devstack: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    port: int | None
    running: bool
    healthy: bool
    log: Path


class Devstack:
    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        apiserver_args: Sequence[str] | None = None,
        progress: Callable[[str], None] = _stderr,
        node: bool | None = None,
    ) -> None:
        """``node``: also run a Kubernetes node (root only; see docs/devstack.md).
        ``None`` keeps what the state directory was set up with."""
        self.paths = StatePaths(Path(state_dir).expanduser().resolve() if state_dir
                                else default_state_dir())
        self.node = node if node is not None else self._node_marker.exists()
        self.pki = Pki(self.paths.pki)
        self.progress = progress
        self.apiserver_args = (list(apiserver_args) if apiserver_args is not None
                               else kube.extra_args_from_env())

    # ---- public API -------------------------------------------------------
    @property
    def components(self) -> tuple[str, ...]:
        """Start order; stop order is the reverse."""
        return COMPONENTS + node.COMPONENTS if self.node else COMPONENTS

    @property
    def kubeconfig(self) -> Path:
        return self.paths.kubeconfig

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self._ports()[KAFKA]}"

    def env(self) -> dict[str, str]:
        env = {
            "KUBECONFIG": str(self.paths.kubeconfig),
            "PUSHRELAY_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "PUSHRELAY_WRITE_STATUS": "true",
            "PUSHRELAY_DEVSTACK_DIR": str(self.paths.root),
        }
        if self.node:  # what pods on the node use to reach Kafka
            env["PUSHRELAY_DEVSTACK_NODE_KAFKA_BOOTSTRAP"] = (
                f"{hostnet.GATEWAY}:{self._ports()['kafka-node']}")
        return env

    def up(self) -> dict[str, str]:
        """Start whatever is not running; return the environment. Idempotent."""
        self.paths.ensure()
        with self._lock():
            if self.healthy():
                self._write_env()
                return self.env()
            started: list[str] = []
            try:
                self._up(started)
            except BaseException:
                for name in reversed(started):
                    self.stop_component(name)
                if self.node and not self._running(node.CONTAINERD):
                    node.cleanup_host(self.paths, gobuild.cached_binary(node.KUBE_PROXY))
                raise
            return self.env()

    def down(self, purge: bool = False) -> list[str]:
        """Stop every recorded process (SIGTERM, then SIGKILL); return their names."""
        stopped = []
        if self.paths.run.is_dir():
            with self._lock():
                if self.node:
                    self._drain_node()
                for name in reversed(self.components):
                    if self.stop_component(name):
                        stopped.append(name)
                    if name == node.CONTAINERD:  # every node process is gone now
                        node.cleanup_host(self.paths, gobuild.cached_binary(node.KUBE_PROXY))
        if purge and self.paths.root.is_dir():
            shutil.rmtree(self.paths.root)
        return stopped

    def status(self) -> list[ComponentStatus]:
        out = []
        for name in self.components:
            rec = self._record(name)
            running = rec is not None and procs.is_running(rec)
            healthy = running and rec is not None and self._healthy(name, rec.port)
            out.append(ComponentStatus(name, rec.pid if rec else None, rec.port if rec else None,
                                       running, healthy, self.paths.log(name)))
        return out

    def healthy(self) -> bool:
        return all(s.healthy for s in self.status()) and self.paths.kubeconfig.exists()

    def stop_component(self, name: str) -> bool:
        """Stop one component; True if it was running. Its port is kept for restart."""
        rec = self._record(name)
        if rec is None:
            return False
        was_running = procs.is_running(rec)
        procs.stop(rec)
        self.paths.pid_record(name).unlink(missing_ok=True)
        if was_running:
            self.progress(f"stopped {name} (pid {rec.pid})")
        return was_running

    def start_component(self, name: str, *, extra_args: Sequence[str] | None = None) -> None:
        """(Re)start one component on its recorded port and wait until it is ready."""
        if extra_args is not None and name == APISERVER:
            self.apiserver_args = list(extra_args)
        if not self._running(name):
            self._start(name, self._ports())
        self._wait(name)

    def stop_kafka(self) -> bool:
        return self.stop_component(KAFKA)

    def start_kafka(self) -> None:
        self.start_component(KAFKA)

    def stop_apiserver(self) -> bool:
        return self.stop_component(APISERVER)

    def start_apiserver(self, extra_args: Sequence[str] | None = None) -> None:
        self.start_component(APISERVER, extra_args=extra_args)

    def admin_client(self) -> KubeHTTP:
        return KubeHTTP.admin(self.pki, self._ports()[APISERVER])

    def import_image(self, archive: Path | bytes, ref: str) -> None:
        """Make a ``docker save`` archive's image ``ref`` available to the node's pods."""
        containerd.import_image(self.paths.root, archive, ref)

    # ---- internals --------------------------------------------------------
    def _up(self, started: list[str]) -> None:
        t0 = time.monotonic()
        self._binaries()
        kafka.check_java()
        ensure_pki(self.paths.pki, self._sans)
        ensure_admin(self.pki)
        if self.node:
            node.ensure_identities(self.pki)
            self._node_marker.parent.mkdir(parents=True, exist_ok=True)
            self._node_marker.touch()
            hostnet.setup(self._node_marker.parent)  # Kafka listens on the bridge address
        running = [n for n in self.components if self._running(n)]
        chosen = ports.choose(self.paths.ports_file, running)
        for name in self.components:
            if name not in running:  # all ports checked before anything starts
                ports.require_free(name, chosen)
        self._start(ETCD, chosen, started)
        self._wait(ETCD)
        self._start(APISERVER, chosen, started)
        self._start(KAFKA, chosen, started)  # boots while the apiserver does
        self._wait(APISERVER)
        write_kubeconfig(self.paths.kubeconfig, self.pki, chosen[APISERVER], ADMIN_USER)
        client = self.admin_client()
        install_crds(client, progress=self.progress)
        for ns in NAMESPACES:
            ensure_namespace(client, ns)
        self._start(CONTROLLER_MANAGER, chosen, started)
        self._wait(KAFKA)
        self._wait(CONTROLLER_MANAGER)
        for name in node.COMPONENTS if self.node else ():
            t_node = time.monotonic()
            self._start(name, chosen, started)
            self._wait(name)
            what = f"node {node.NODE_NAME} Ready" if name == node.KUBELET else f"{name} ready"
            self.progress(f"{what} in {time.monotonic() - t_node:.1f}s")
        self._write_env()
        self.progress(f"up in {time.monotonic() - t0:.1f}s; state: {self.paths.root}")

    def _binaries(self) -> dict[str, Path]:
        found = {
            KAFKA: kafka.ensure_jars(self.progress),
            ETCD: gobuild.ensure_etcd(self.progress),
            APISERVER: gobuild.ensure_kube_apiserver(self.progress),
            CONTROLLER_MANAGER: gobuild.ensure_kube_controller_manager(self.progress),
        }
        if self.node:
            found.update(node.ensure_binaries(self.progress))
        return found

    @property
    def _node_marker(self) -> Path:
        return self.paths.root / "node" / "enabled"

    @property
    def _node_ip(self) -> str | None:
        return hostnet.GATEWAY if self.node else None

    @property
    def _sans(self) -> tuple[str, ...]:
        return node.SERVING_SANS if self.node else ()

    def _drain_node(self) -> None:
        """Before the node stops: no scheduling, then every pod removed by its kubelet."""
        self.stop_component(node.SCHEDULER)
        if not self._running(APISERVER):
            return
        deleted = node.drain(self.admin_client(), kubelet_alive=self._running(node.KUBELET))
        if deleted:
            self.progress(f"deleted {deleted} pods from node {node.NODE_NAME}")

    def _start(self, name: str, chosen: dict[str, int], started: list[str] | None = None) -> None:
        if self._running(name):
            return
        ports.require_free(name, chosen)
        rec = self._launch(name, chosen)
        if started is not None:
            started.append(name)
        self.progress(f"started {name} (pid {rec.pid}, port {rec.port}, "
                      f"log {self.paths.log(name)})")

    def _launch(self, name: str, chosen: dict[str, int]) -> procs.ProcRecord:
        progress = self.progress
        if name == ETCD:
            return kube.start_etcd(gobuild.ensure_etcd(progress), self.paths, chosen[ETCD],
                                   chosen["etcd-peer"])
        if name == APISERVER:
            ensure_pki(self.paths.pki, self._sans)
            return kube.start_apiserver(gobuild.ensure_kube_apiserver(progress), self.paths,
                                        self.pki, chosen[APISERVER], chosen[ETCD],
                                        self.apiserver_args, self._node_ip)
        if name == CONTROLLER_MANAGER:
            binary = gobuild.ensure_kube_controller_manager(progress)
            node_args = kube.controller_manager_node_args(self.pki) if self.node else []
            return kube.start_controller_manager(binary, self.paths, chosen[CONTROLLER_MANAGER],
                                                 self.paths.kubeconfig, node_args)
        if name in node.COMPONENTS:
            return self._launch_node(name, chosen)
        libs = kafka.ensure_jars(progress)
        node_listener = (hostnet.GATEWAY, chosen["kafka-node"]) if self.node else None
        kafka.write_config(self.paths, chosen[KAFKA], chosen["kafka-controller"], node_listener)
        kafka.format_storage(libs, self.paths)
        return kafka.start(libs, self.paths, chosen[KAFKA])

    def _launch_node(self, name: str, chosen: dict[str, int]) -> procs.ProcRecord:
        if name == node.CONTAINERD:
            return node.start_containerd(self.paths)
        binary = gobuild.ensure_kube_command(name, self.progress)
        api = chosen[APISERVER]
        if name == node.SCHEDULER:
            return node.start_scheduler(binary, self.paths, self.pki, api, chosen[name])
        if name == node.KUBE_PROXY:
            return node.start_kube_proxy(binary, self.paths, self.pki, api, chosen[name],
                                         chosen["kube-proxy-metrics"])
        return node.start_kubelet(binary, self.paths, self.pki, api, chosen[name],
                                  chosen["kubelet-healthz"])

    def _wait(self, name: str) -> None:
        rec = self._record(name)
        if rec is None:
            raise DevstackError(name, "not started", self.paths.log(name))
        if name == ETCD:
            kube.wait_etcd(rec)
        elif name == APISERVER:
            kube.wait_apiserver(rec, KubeHTTP.admin(self.pki, rec.port))
        elif name == CONTROLLER_MANAGER:
            kube.wait_controller_manager(rec)
        elif name == node.CONTAINERD:
            node.wait_containerd(rec, self.paths, self.progress)
        elif name == node.KUBELET:
            node.wait_node_ready(rec, self.admin_client())
        elif name in node.COMPONENTS:
            procs.wait_until(name, lambda: self._healthy(name, rec.port), timeout=60, rec=rec,
                             what="healthy (/healthz)")
        else:
            kafka.wait_ready(rec)

    def _healthy(self, name: str, port: int) -> bool:
        try:
            if name == ETCD:
                return kube.etcd_healthy(port)
            if name == APISERVER:
                return kube.apiserver_ready(KubeHTTP.admin(self.pki, port))
            if name == CONTROLLER_MANAGER:
                return kube.controller_manager_healthy(port)
            if name == node.CONTAINERD:
                return containerd.healthy(self.paths.root)
            if name == node.SCHEDULER:
                return node.https_healthz(port)
            if name == node.KUBE_PROXY:
                return node.http_healthz(port)
            if name == node.KUBELET:
                return node.http_healthz(self._ports()["kubelet-healthz"])
            return kafka.is_ready(f"127.0.0.1:{port}")
        except Exception:  # noqa: BLE001 - unhealthy is an answer, not an error
            return False

    def _running(self, name: str) -> bool:
        rec = self._record(name)
        return rec is not None and procs.is_running(rec)

    def _record(self, name: str) -> procs.ProcRecord | None:
        return procs.ProcRecord.load(self.paths.pid_record(name))

    def _ports(self) -> dict[str, int]:
        return ports.load(self.paths.ports_file)

    def _write_env(self) -> None:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.env().items()]
        self.paths.env_file.write_text("\n".join(lines) + "\n")

    def _lock(self) -> AbstractContextManager[None]:
        return procs.file_lock(self.paths.root / ".lock")


def mint_user_kubeconfig(
    state_dir: Path | str | None, user: str, groups: Sequence[str] = ()
) -> Path:
    """A kubeconfig for ``user`` in ``groups`` (client cert signed by the devstack CA).

    The user has no RBAC grants until someone binds a role to it.
    """
    stack = Devstack(state_dir)
    pki = ensure_pki(stack.paths.pki)
    issue_client(pki, user, tuple(groups))
    users = stack.paths.root / "users"
    users.mkdir(exist_ok=True)
    path = users / f"{pki.client_cert(user).stem.removeprefix('user-')}.kubeconfig"
    return write_kubeconfig(path, pki, stack._ports()[APISERVER], user)
