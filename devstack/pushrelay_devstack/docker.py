"""A Docker engine for the image, Compose and testcontainers tests.

``engine_up()`` returns an :class:`Engine` for the daemon on ``DOCKER_HOST``'s
Unix socket (default ``/var/run/docker.sock``):

* one already answers ``/_ping`` (a normal Docker install, or one started
  earlier): it is reused as it is and never stopped by ``engine_down()``;
* otherwise, as root, Debian's ``docker.io`` is installed if ``dockerd`` is
  missing, and ``dockerd --storage-driver=vfs --iptables=false --bridge=none``
  is started in the background with its log and PID record under
  ``<cache>/docker``. Those flags are what works inside an unprivileged-ish
  sandbox without a bridge: containers use the host network (``--network
  host``), which is how the devstack's loopback API server stays reachable.

``engine_down()`` stops only a daemon this module started (by its PID record).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pushrelay_devstack import apt, procs
from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.paths import cache_dir

COMPONENT = "docker"
DEFAULT_SOCKET = Path("/var/run/docker.sock")
DAEMON_FLAGS = ("--storage-driver=vfs", "--iptables=false", "--bridge=none")
# What the engine needs, as command -> Debian package.
PACKAGES = {"dockerd": "docker.io", "containerd": "containerd", "runc": "runc",
            "docker-init": "tini"}
START_TIMEOUT = 90.0

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


@dataclass(frozen=True)
class Engine:
    """A reachable daemon and the client to drive it with."""

    socket: Path
    cli: str
    server_version: str
    api_version: str
    started_here: bool

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (docker CLI, Compose, docker-py): this daemon, BuildKit."""
        return {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1",
                "DOCKER_API_VERSION": self.api_version}

    def run(self, args: Sequence[str], *, log: Path | None = None, check: bool = True,
            input: bytes | None = None, timeout: float | None = None,
            ) -> subprocess.CompletedProcess[bytes]:
        """``docker ARGS`` against this engine; stdout captured, stderr to ``log`` or captured."""
        argv = [self.cli, *args]
        env = {**os.environ, **self.env}
        if log is None:
            proc = subprocess.run(argv, env=env, input=input, capture_output=True,
                                  timeout=timeout, check=False)
        else:
            with log.open("ab") as err:
                err.write(f"\n$ docker {' '.join(args)}\n".encode())
                err.flush()
                proc = subprocess.run(argv, env=env, input=input, stdout=subprocess.PIPE,
                                      stderr=err, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip()[-400:] if log is None else ""
            raise DevstackError(COMPONENT, f"`docker {' '.join(args[:3])} ...` failed"
                                + (f": {detail}" if detail else ""), log)
        return proc


def socket_path() -> Path:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return Path(host.removeprefix("unix://"))
    if host:
        raise DevstackError(COMPONENT, f"DOCKER_HOST={host} is not a unix:// socket; "
                            "only a local engine is supported")
    return DEFAULT_SOCKET


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


def _get(path: Path, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = _UnixHTTP(path, timeout)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ping(path: Path) -> bool:
    """True when a daemon answers ``GET /_ping`` on ``path``."""
    try:
        status, body = _get(path, "/_ping")
    except OSError:
        return False
    return status == 200 and body.strip() == b"OK"


def _version(path: Path) -> dict[str, str]:
    status, body = _get(path, "/version")
    if status != 200:
        raise DevstackError(COMPONENT, f"GET /version answered {status}")
    data: dict[str, str] = json.loads(body)
    return data


def client() -> str:
    """The docker CLI: Debian's (matches the daemon it installs, BuildKit built in), else PATH's."""
    packaged = Path("/usr/bin/docker")
    if packaged.is_file() and os.access(packaged, os.X_OK):
        return str(packaged)
    found = shutil.which("docker")
    if found is None:
        raise DevstackError(COMPONENT, "no `docker` CLI (Debian package docker.io provides one)")
    return found


def state_dir() -> Path:
    return cache_dir() / "docker"


def _record_path() -> Path:
    return state_dir() / "dockerd.json"


def engine() -> Engine:
    """The engine on the socket now; DevstackError when none answers."""
    path = socket_path()
    if not ping(path):
        raise DevstackError(COMPONENT, f"no Docker engine answers on {path}; "
                            "run `pushrelay devstack docker up`")
    version = _version(path)
    return Engine(path, client(), version.get("Version", "?"), version.get("ApiVersion", "1.41"),
                  started_here=_ours() is not None)


def _ours() -> procs.ProcRecord | None:
    rec = procs.ProcRecord.load(_record_path())
    return rec if rec is not None and procs.is_running(rec) else None


def engine_up(progress: Progress = _quiet) -> Engine:
    """Reuse a running engine or start one (see the module docstring). Idempotent."""
    path = socket_path()
    if ping(path):
        return engine()
    if path != DEFAULT_SOCKET and not os.access(path.parent, os.W_OK):
        raise DevstackError(COMPONENT, f"no engine on {path} and cannot start one there")
    if os.geteuid() != 0:
        raise DevstackError(COMPONENT, f"no Docker engine answers on {path}, and starting one "
                            "(dockerd) needs root; start Docker, or run as root")
    apt.ensure_commands(COMPONENT, PACKAGES, progress)
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "dockerd.log"
    stale = _ours()
    if stale is not None:  # ours but not answering: replace it
        procs.stop(stale)
    argv = [shutil.which("dockerd") or "dockerd", *DAEMON_FLAGS,
            f"--host=unix://{path}", f"--pidfile={directory / 'dockerd.pid'}"]
    progress(f"starting dockerd ({' '.join(DAEMON_FLAGS)}); log: {log}")
    rec = procs.start(COMPONENT, argv, log=log, record=_record_path(), port=0)
    procs.wait_until(COMPONENT, lambda: ping(path), timeout=START_TIMEOUT, rec=rec,
                     what=f"answering on {path}", interval=0.25)
    found = engine()
    progress(f"dockerd {found.server_version} (API {found.api_version}) up, pid {rec.pid}")
    return found


def engine_down(progress: Progress = _quiet) -> bool:
    """Stop the dockerd ``engine_up`` started (and its containers); False if none."""
    rec = _ours()
    if rec is None:
        return False
    procs.stop(rec, timeout=30)
    _record_path().unlink(missing_ok=True)
    progress(f"stopped dockerd (pid {rec.pid})")
    return True
