"""A containerd of the node's own: CRI plugin, own root, state and socket.

It never touches the host's default containerd (``/run/containerd``) or
Docker's: everything lives under ``<state>/containerd``. Snapshots use
``overlayfs`` where the state directory's file system takes an overlay mount
(probed once), else ``native`` (plain copies: works anywhere, but every
container start copies its image). Images cannot be pulled here (no registry is
reachable), so every image a pod uses is imported with :func:`import_image`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from pushrelay_devstack import hostnet, procs
from pushrelay_devstack.errors import DevstackError

COMPONENT = "containerd"
NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin uses


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DevstackError(COMPONENT, f"`{name}` is not on PATH; install Debian's "
                            "containerd and runc (`make node-deps`)")
    return path


def root(state: Path) -> Path:
    return state / "containerd"


def socket(state: Path) -> Path:
    return root(state) / "containerd.sock"


def snapshotter(state: Path) -> str:
    """``overlayfs`` if an overlay mount works under ``state``, else ``native``;
    decided once per state directory (images are unpacked for it)."""
    chosen = root(state) / "snapshotter"
    if chosen.is_file():
        return chosen.read_text().strip()
    probe = root(state) / "overlay-probe"
    dirs = {name: probe / name for name in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
    mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options,
                              str(dirs["merged"])], capture_output=True, check=False)
    if mounted.returncode == 0:
        subprocess.run(["umount", str(dirs["merged"])], capture_output=True, check=False)
    shutil.rmtree(probe, ignore_errors=True)
    name = "overlayfs" if mounted.returncode == 0 else "native"
    chosen.write_text(name)
    return name


def config_toml(state: Path, sandbox_image: str) -> str:
    base = root(state)
    return f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket(state)}"

[ttrpc]
  address = "{socket(state)}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter(state)}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{binary('runc')}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{hostnet.CNI_BIN_DIR}"
    conf_dir = "{state / 'cni' / 'net.d'}"
"""


def start(state: Path, log: Path, record: Path, sandbox_image: str) -> procs.ProcRecord:
    base = root(state)
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.toml"
    config.write_text(config_toml(state, sandbox_image))
    argv = [binary("containerd"), f"--config={config}", "--log-level=warn"]
    return procs.start(COMPONENT, argv, log=log, record=record, port=0)


def ctr(state: Path, *args: str, stdin: bytes | None = None,
        stdin_file: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    argv = [binary("ctr"), f"--address={socket(state)}", f"--namespace={NAMESPACE}", *args]
    if stdin_file is None:
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout,
                              check=False)
    with stdin_file.open("rb") as fh:
        return subprocess.run(argv, stdin=fh, capture_output=True, timeout=timeout, check=False)


def healthy(state: Path) -> bool:
    return socket(state).exists() and ctr(state, "version", timeout=5).returncode == 0


def wait(rec: procs.ProcRecord, state: Path, timeout: float = 60) -> None:
    procs.wait_until(COMPONENT, lambda: healthy(state), timeout=timeout, rec=rec,
                     what="serving (ctr version)")


def image_ref(image: str) -> str:
    """The name containerd (and the kubelet) gives a Docker-style reference:
    ``pushrelay:latest`` is ``docker.io/library/pushrelay:latest``."""
    name = image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    return name


def has_image(state: Path, ref: str) -> bool:
    out = ctr(state, "images", "ls", "-q", timeout=30)
    return out.returncode == 0 and ref in out.stdout.decode().split()


def import_image(state: Path, archive: Path | bytes, ref: str) -> None:
    """Import a ``docker save``-format archive (path or bytes) that holds ``ref``."""
    argv = ("images", "import", f"--snapshotter={snapshotter(state)}", "-")
    out = (ctr(state, *argv, stdin=archive) if isinstance(archive, bytes)
           else ctr(state, *argv, stdin_file=archive))
    if out.returncode != 0:
        raise DevstackError(COMPONENT, f"cannot import {ref}: {out.stderr.decode().strip()}")
    if not has_image(state, ref):
        raise DevstackError(COMPONENT, f"imported archive does not hold {ref}")


def stop_leftover_shims(state: Path) -> list[int]:
    """SIGKILL any ``containerd-shim-runc-v2`` still serving this containerd (by PID).

    Shims normally exit when their pod sandbox is removed; this only catches
    those left by a containerd that was killed. Returns the PIDs signalled.
    """
    address = str(socket(state))
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address.encode() in argv:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed
