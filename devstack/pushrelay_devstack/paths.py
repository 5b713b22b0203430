"""Where the devstack keeps things, and which versions it runs.

Two directories:

* the **cache** (``PUSHRELAY_CACHE_DIR``, default ``~/.cache/pushrelay``):
  built binaries and resolved jars, shared by every state directory and kept
  across ``up``/``down``. Deleting it only costs a rebuild.
* the **state directory** (``--state-dir``, ``PUSHRELAY_DEVSTACK_DIR``, default
  ``~/.cache/pushrelay/devstack``): one running stack's certificates, data,
  logs, PID records, kubeconfig and ``env`` file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = os.environ.get("PUSHRELAY_DEVSTACK_KAFKA_VERSION", "3.9.1")
SLF4J_VERSION = "1.7.36"  # the slf4j line Kafka 3.9 is built against
KUBERNETES_VERSION = os.environ.get("PUSHRELAY_DEVSTACK_KUBERNETES_VERSION", "v1.35.4")
ETCD_VERSION = os.environ.get("PUSHRELAY_DEVSTACK_ETCD_VERSION", "v3.6.8")
COMPOSE_VERSION = os.environ.get("PUSHRELAY_DEVSTACK_COMPOSE_VERSION", "v2.40.3")


def cache_dir() -> Path:
    env = os.environ.get("PUSHRELAY_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "pushrelay").resolve()


def default_state_dir() -> Path:
    env = os.environ.get("PUSHRELAY_DEVSTACK_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return cache_dir() / "devstack"


@dataclass(frozen=True)
class StatePaths:
    """Files inside one state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd-data"

    @property
    def kafka_data(self) -> Path:
        return self.root / "kafka-data"

    @property
    def kafka_config(self) -> Path:
        return self.root / "kafka" / "server.properties"

    @property
    def kafka_log4j(self) -> Path:
        return self.root / "kafka" / "log4j.properties"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def pid_record(self, component: str) -> Path:
        return self.run / f"{component}.json"

    def ensure(self) -> None:
        for d in (self.root, self.pki, self.logs, self.run):
            d.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
