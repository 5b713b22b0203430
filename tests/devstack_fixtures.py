"""Give a pytest session a devstack: reuse one that runs, else start one.

Order of preference:

1. ``KUBECONFIG`` *and* ``PUSHRELAY_KAFKA_BOOTSTRAP`` set (``eval "$(pushrelay
   devstack env)"``, or CI exporting its own): use them, stop nothing. The API
   server must be on loopback, so tests never write to a real cluster by
   accident.
2. The devstack in the default state directory is healthy (someone ran
   ``pushrelay devstack up`` without sourcing ``env``): use it, stop nothing.
3. Otherwise start a fresh one for this session and, at the end, stop it and
   delete its state. Its state directory is ``PUSHRELAY_TEST_DEVSTACK_DIR`` if
   set, else ``<cache>/devstack-test/session-<pid>``: concurrent sessions on one
   machine each get their own stack, and stacks left by sessions that died are
   stopped and removed by the next one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import yaml

from pushrelay_devstack import procs
from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.paths import cache_dir, default_state_dir
from pushrelay_devstack.stack import Devstack

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
    explicit = os.environ.get("PUSHRELAY_TEST_DEVSTACK_DIR")
    if explicit:
        stack = Devstack(explicit)
        stack.down(purge=True)  # leftovers of an interrupted session
    else:
        base = cache_dir() / "devstack-test"
        _reap_orphans(base)
        stack = Devstack(base / f"session-{os.getpid()}")
        stack.paths.ensure()
        procs.ProcRecord("pytest", os.getpid(), procs.start_ticks(os.getpid()) or 0, 0, "").save(
            stack.paths.root / "owner.json"
        )
    env = stack.up()

    def stop() -> None:
        stack.down(purge=True)

    return env, stop


def _reap_orphans(base: Path) -> None:
    """Stop and delete session stacks whose pytest process is gone."""
    if not base.is_dir():
        return
    for state in base.glob("session-*"):
        owner = procs.ProcRecord.load(state / "owner.json")
        if owner is not None and procs.is_running(owner):
            continue
        if owner is None and time.time() - state.stat().st_mtime < 300:
            continue  # a session still writing its owner record
        Devstack(state, progress=lambda _msg: None).down(purge=True)


def state_dir_of(env: dict[str, str]) -> Path:
    """The state directory behind an ``ensure_devstack`` environment (for minting users)."""
    if env.get("PUSHRELAY_DEVSTACK_DIR"):
        return Path(env["PUSHRELAY_DEVSTACK_DIR"])
    return Path(env["KUBECONFIG"]).parent
