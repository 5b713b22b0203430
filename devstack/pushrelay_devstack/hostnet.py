"""The node's network on the host: one bridge, its CNI config, a fence, forwarding.

Pods get addresses from ``POD_CIDR`` on the bridge ``BRIDGE``, whose address
``GATEWAY`` is also the node's InternalIP, the apiserver's advertised address
and Kafka's second listener: everything a pod talks to is on this host.

Service addresses (``SERVICE_CIDR``) are routed to the bridge too, so a packet
to a Service that kube-proxy has not translated yet stays on this host. The
fence (iptables chain ``FENCE`` jumped to first from ``FORWARD``) lets
traffic between pods through and drops anything a pod sends that would leave
through another interface, so no pod packet ever leaves the machine; the CNI
config does no masquerading either. IPv4 forwarding is switched on while the
node runs (kube-proxy's DNAT from a pod to a Service needs it) and put back to
its previous value by :func:`teardown`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pushrelay_devstack.errors import DevstackError

COMPONENT = "node-network"
BRIDGE = "pushrelay0"
POD_CIDR = "10.217.0.0/24"
GATEWAY = "10.217.0.1"
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
FENCE = "PUSHRELAY-NODE"
CNI_BIN_DIR = Path("/usr/lib/cni")
_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
_BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DevstackError(COMPONENT, f"cannot run {argv[0]}: {exc}") from exc
    if check and proc.returncode != 0:
        raise DevstackError(COMPONENT, f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc


def cni_conflist(ipam_dir: Path) -> dict[str, object]:
    """bridge + host-local (+ portmap): no masquerade, the bridge's address is the gateway."""
    return {
        "cniVersion": "1.0.0",
        "name": "pushrelay-devstack",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def write_cni_config(conf_dir: Path, ipam_dir: Path) -> None:
    missing = [p for p in ("bridge", "host-local", "portmap", "loopback")
               if not (CNI_BIN_DIR / p).is_file()]
    if missing:
        raise DevstackError(COMPONENT, f"CNI plugins {missing} not in {CNI_BIN_DIR}; "
                            "install Debian's containernetworking-plugins (`make node-deps`)")
    conf_dir.mkdir(parents=True, exist_ok=True)
    ipam_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-pushrelay.conflist").write_text(json.dumps(cni_conflist(ipam_dir), indent=2))


def bridge_exists() -> bool:
    return _run(["ip", "link", "show", BRIDGE], check=False).returncode == 0


def _fence_rules() -> list[list[str]]:
    return [
        ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"],
        ["-i", BRIDGE, "-j", "DROP"],
    ]


def setup(state: Path) -> None:
    """Bridge with the gateway address, the fence, forwarding on. Idempotent.

    ``state`` keeps the previous ``ip_forward`` value for :func:`teardown`.
    """
    if not bridge_exists():
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = _run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if f" {GATEWAY}/" not in addrs:
        _run(["ip", "addr", "add", f"{GATEWAY}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    # Service addresses not (yet) translated by kube-proxy go to the bridge, and
    # die there, instead of following the default route off the machine.
    _run(["ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE])
    if _run(["iptables", "-w", "-n", "-L", FENCE], check=False).returncode != 0:
        _run(["iptables", "-w", "-N", FENCE])
        for rule in _fence_rules():
            _run(["iptables", "-w", "-A", FENCE, *rule])
    if _run(["iptables", "-w", "-C", "FORWARD", "-j", FENCE], check=False).returncode != 0:
        _run(["iptables", "-w", "-I", "FORWARD", "1", "-j", FENCE])
    saved = state / "ip_forward.saved"
    if not saved.exists():
        state.mkdir(parents=True, exist_ok=True)
        saved.write_text(_FORWARD.read_text().strip())
    _FORWARD.write_text("1")
    if _BRIDGE_NF.exists():  # Service DNAT for pod-to-pod traffic across the bridge
        _BRIDGE_NF.write_text("1")


def teardown(state: Path) -> None:
    """Undo :func:`setup`: fence, bridge, forwarding value. Tolerates half-done setups."""
    while _run(["iptables", "-w", "-D", "FORWARD", "-j", FENCE], check=False).returncode == 0:
        pass
    _run(["iptables", "-w", "-F", FENCE], check=False)
    _run(["iptables", "-w", "-X", FENCE], check=False)
    if bridge_exists():
        _run(["ip", "link", "del", BRIDGE])
    saved = state / "ip_forward.saved"
    if saved.exists():
        _FORWARD.write_text(saved.read_text().strip() or "0")
        saved.unlink()
