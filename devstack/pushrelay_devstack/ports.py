"""Which loopback ports a state directory's components listen on.

Free ports are chosen at the first ``up`` and kept in ``<state>/ports.json``:
a component restarted later (by ``up`` or by a test that stops it) comes back
on the same port while that port is free, so clients need no new config.
``PUSHRELAY_DEVSTACK_{ETCD,APISERVER,KAFKA}_PORT`` pin a port instead; a
pinned port that is taken is an error, never silently replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path

from pushrelay_devstack import procs
from pushrelay_devstack.errors import DevstackError

# key -> the component that listens on it
OWNERS = {
    "etcd": "etcd",
    "etcd-peer": "etcd",
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
    "kafka": "kafka",
    "kafka-controller": "kafka",
    # only used by a devstack with a node (pushrelay_devstack.node)
    "kafka-node": "kafka",
    "kube-scheduler": "kube-scheduler",
    "kube-proxy": "kube-proxy",
    "kube-proxy-metrics": "kube-proxy",
    "kubelet": "kubelet",
    "kubelet-healthz": "kubelet",
}
PINNED_ENV = {
    "etcd": "PUSHRELAY_DEVSTACK_ETCD_PORT",
    "kube-apiserver": "PUSHRELAY_DEVSTACK_APISERVER_PORT",
    "kafka": "PUSHRELAY_DEVSTACK_KAFKA_PORT",
}
# A component's second port, and what to call it in an error.
SECONDARY = {"etcd": ("etcd-peer", "peer port"), "kafka": ("kafka-controller", "controller port"),
             "kube-proxy": ("kube-proxy-metrics", "metrics port"),
             "kubelet": ("kubelet-healthz", "healthz port")}


def load(path: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError) as exc:
        raise DevstackError(
            "devstack", f"not set up in {path.parent}; run `pushrelay devstack up`"
        ) from exc


def choose(path: Path, running: Collection[str]) -> dict[str, int]:
    """Ports for every key: pinned, else kept (owner running or port free), else new."""
    try:
        old = load(path)
    except DevstackError:
        old = {}
    ports: dict[str, int] = {}
    for key, owner in OWNERS.items():
        pinned = os.environ.get(PINNED_ENV.get(key, ""), "")
        previous = old.get(key)
        if pinned:
            ports[key] = int(pinned)
        elif previous and owner in running:
            ports[key] = previous
        elif previous and previous not in ports.values() and procs.port_is_free(previous):
            ports[key] = previous
        else:
            port = procs.free_port()
            while port in ports.values():
                port = procs.free_port()
            ports[key] = port
    path.write_text(json.dumps(ports, indent=2))
    return ports


def require_free(component: str, ports: dict[str, int]) -> None:
    if component not in ports:  # listens on no TCP port (containerd: a socket)
        return
    procs.require_free(component, ports[component])
    if component in SECONDARY:
        key, what = SECONDARY[component]
        procs.require_free(component, ports[key], what)
