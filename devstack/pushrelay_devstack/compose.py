"""Docker Compose v2 against the local engine, built from its Go module.

:func:`ensure_binary` builds ``docker-compose`` once into the cache
(:func:`gobuild.ensure_docker_compose`); it runs standalone, so nothing is
installed into the user's Docker CLI configuration. :class:`Project` runs it on
``compose/docker-compose.yml`` plus the host-network override
(``compose/compose.host-network.yml``): the engine this devstack starts has no
bridge, and the devstack's API server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pushrelay_devstack import gobuild, images
from pushrelay_devstack.docker import Engine
from pushrelay_devstack.errors import DevstackError

COMPONENT = "compose"
COMPOSE_FILE = "docker-compose.yml"
HOST_NETWORK_FILE = "compose.host-network.yml"
Progress = Callable[[str], None]


def ensure_binary(progress: Progress) -> Path:
    return gobuild.ensure_docker_compose(progress)


def compose_dir(root: Path | None = None) -> Path:
    return (root or images.source_root()) / "compose"


@dataclass
class Project:
    """One Compose project (``-p name``) on the host-network files of ``directory``."""

    engine: Engine
    binary: Path
    name: str
    directory: Path
    env: Mapping[str, str] = field(default_factory=dict)
    files: Sequence[str] = (COMPOSE_FILE, HOST_NETWORK_FILE)
    log: Path | None = None

    def argv(self, args: Sequence[str]) -> list[str]:
        argv = [str(self.binary), "--project-name", self.name,
                "--project-directory", str(self.directory)]
        for name in self.files:
            argv += ["-f", str(self.directory / name)]
        return [*argv, *args]

    def run(self, args: Sequence[str], *, check: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """``docker compose ARGS``; output captured (and appended to ``log`` if set)."""
        env = {**os.environ, **self.engine.env, **self.env}
        proc = subprocess.run(self.argv(args), env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        if self.log is not None:
            with self.log.open("a") as out:
                out.write(f"\n$ docker compose {' '.join(args)}  (rc={proc.returncode})\n"
                          f"{proc.stdout}{proc.stderr}")
        if check and proc.returncode != 0:
            raise DevstackError(COMPONENT, f"`docker compose {' '.join(args[:2])}` failed: "
                                f"{proc.stderr.strip()[-600:]}", self.log)
        return proc

    def resources(self) -> dict[str, list[str]]:
        """What the engine holds for this project: containers, networks, volumes (by label)."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, args in (("containers", ["ps", "-a", "-q", "--filter", label]),
                           ("networks", ["network", "ls", "-q", "--filter", label]),
                           ("volumes", ["volume", "ls", "-q", "--filter", label])):
            out = self.engine.run(args).stdout.decode().split()
            found[kind] = out
        return found


def readable_kubeconfig(kubeconfig: Path, out_dir: Path) -> Path:
    """A copy of ``kubeconfig`` in ``out_dir`` that uid 10001 can read when mounted.

    The devstack's own copy is private to its owner; the containers run as 10001.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "kubeconfig"
    target.write_bytes(kubeconfig.read_bytes())
    target.chmod(0o644)
    return target


def devstack_env(kubeconfig: Path, out_dir: Path) -> dict[str, str]:
    """Variables for the Compose files to run against a devstack and the local images."""
    return {
        "KUBECONFIG_FILE": str(readable_kubeconfig(kubeconfig, out_dir)),
        "PUSHRELAY_IMAGE": images.pushrelay_tags()[-1],
        "KAFKA_IMAGE": images.kafka_tag(),
        "PUSHRELAY_WRITE_STATUS": "true",
    }
