"""Give a pytest session a devstack: reuse one that runs, else start one.

Order of preference:

1. ``KUBECONFIG`` *and* ``PUSHRELAY_KAFKA_BOOTSTRAP`` set (``eval "$(pushrelay
   devstack env)"``, or CI exporting its own): use them, stop nothing. The API
   server must be on loopback, so tests never write to a real cluster by
   accident.
2. The devstack in the default state directory is healthy (someone ran
   ``pushrelay devstack up`` without sourcing ``env``): use it, stop nothing.
3. Otherwise start a fresh one in ``PUSHRELAY_TEST_DEVSTACK_DIR`` (default
   ``<cache>/devstack-test``) and, at the end, stop it and delete its state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import yaml

from pushrelay.devstack.errors import DevstackError
from pushrelay.devstack.paths import cache_dir, default_state_dir
from pushrelay.devstack.stack import Devstack

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _kube_server(kubeconfig: str) -> str:
    config = yaml.safe_load(Path(kubeconfig).read_text())
    context_name = config.get("current-context")
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    return str(cluster["server"])


def _from_environment() -> dict[str, str] | None:
    kubeconfig = os.environ.get("KUBECONFIG")
    bootstrap = os.environ.get("PUSHRELAY_KAFKA_BOOTSTRAP")
    if not (kubeconfig and bootstrap):
        return None
    server = _kube_server(kubeconfig)
    if urlparse(server).hostname not in _LOOPBACK:
        raise DevstackError(
            "tests",
            f"KUBECONFIG points at {server}, not a loopback devstack; refusing to run "
            "integration tests against it (unset KUBECONFIG to start a devstack)",
        )
    env = {"KUBECONFIG": kubeconfig, "PUSHRELAY_KAFKA_BOOTSTRAP": bootstrap}
    state = os.environ.get("PUSHRELAY_DEVSTACK_DIR")
    if not state and (Path(kubeconfig).parent / "pki" / "ca.key").exists():
        state = str(Path(kubeconfig).parent)
    if state:
        env["PUSHRELAY_DEVSTACK_DIR"] = state
    return env


def _noop() -> None:
    return None


def ensure_devstack() -> tuple[dict[str, str], Callable[[], None]]:
    """The environment of a running devstack, and how to stop it when done."""
    env = _from_environment()
    if env is not None:
        return env, _noop
    running = Devstack(default_state_dir())
    if running.paths.run.is_dir() and running.healthy():
        return running.env(), _noop
    state = os.environ.get("PUSHRELAY_TEST_DEVSTACK_DIR") or str(cache_dir() / "devstack-test")
    stack = Devstack(state)
    stack.down(purge=True)  # leftovers of an interrupted session
    env = stack.up()

    def stop() -> None:
        stack.down(purge=True)

    return env, stop


def state_dir_of(env: dict[str, str]) -> Path:
    """The state directory behind an ``ensure_devstack`` environment (for minting users)."""
    if env.get("PUSHRELAY_DEVSTACK_DIR"):
        return Path(env["PUSHRELAY_DEVSTACK_DIR"])
    return Path(env["KUBECONFIG"]).parent
