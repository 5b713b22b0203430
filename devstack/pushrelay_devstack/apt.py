"""Install Debian packages the devstack needs (root only, idempotent).

``ensure_commands({"dockerd": "docker.io"})`` installs the packages whose
command is not on PATH, with ``apt-get update`` first, non-interactively;
apt's lock is waited for (another process may be installing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.paths import cache_dir

Progress = Callable[[str], None]


def missing(commands: Mapping[str, str]) -> list[str]:
    """The packages (sorted, unique) providing the commands not on PATH."""
    return sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None})


def ensure_commands(component: str, commands: Mapping[str, str], progress: Progress) -> None:
    """Make every command in ``commands`` (command -> Debian package) available."""
    packages = missing(commands)
    if not packages:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise DevstackError(
            component,
            f"needs {', '.join(sorted(commands))}; install the Debian package(s) "
            f"{' '.join(packages)} (automatic only as root on Debian/Ubuntu)",
        )
    log = cache_dir() / "logs" / "apt.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    progress(f"installing {' '.join(packages)} with apt-get (first run only); log: {log}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    for argv in (
        ["apt-get", *lock, "update", "-q"],
        ["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", *packages],
    ):
        _run(component, argv, log, env)
    still = missing(commands)
    if still:
        raise DevstackError(component, f"apt-get installed {' '.join(still)} but a command "
                            "is still not on PATH", log)


def _run(component: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=env, check=False)
    if proc.returncode != 0:
        raise DevstackError(component, f"`{' '.join(argv[:4])} ...` failed", log)
