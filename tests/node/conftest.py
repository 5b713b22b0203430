"""Fixtures of the real-node tests: a devstack with a node of its own, and the image.

The stack lives in ``PUSHRELAY_NODE_DEVSTACK_DIR`` (default
``<cache>/devstack-node``), never the shared devstack: a node changes how the
apiserver and Kafka listen. One node per machine (its bridge, iptables chains
and cgroups are host-wide), so concurrent sessions share it under a lock file.

Every module here uses the same session-scoped stack and imported image (one
``up`` and one import per run). The image must hold this checkout's code
(``image_sources``): another checkout's build under the same tag is rebuilt
first, never tested in its place. A test marked ``node_down`` takes the stack
down to check what is left on the host, so it is moved after every other test
of this directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import new_api_client
from pushrelay_devstack import containerd
from pushrelay_devstack.paths import cache_dir
from pushrelay_devstack.stack import Devstack
from tests.node.image_sources import recorded_hashes, stale_sources

STATE = Path(os.environ.get("PUSHRELAY_NODE_DEVSTACK_DIR", cache_dir() / "devstack-node"))
IMAGE = os.environ.get("PUSHRELAY_NODE_IMAGE", "pushrelay:latest")
ROOT = Path(__file__).resolve().parents[2]
MEASUREMENTS = STATE.parent / "node-measurements.json"


def record(key: str, value: Any) -> None:
    """Keep a measured number (printed at the end, and in node-measurements.json)."""
    MEASURED[key] = value
    print(f"node: {key} = {value}", file=sys.stderr, flush=True)


MEASURED: dict[str, Any] = {}


def _docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], capture_output=True, timeout=timeout, check=False)


def _product_image_present() -> bool:
    return shutil.which("docker") is not None and _docker("image", "inspect", IMAGE).returncode == 0


def _build_product_image() -> None:
    """``pushrelay devstack images`` (the image issue's builder) when this checkout has it."""
    cli = [sys.executable, "-m", "pushrelay", "devstack"]
    if subprocess.run([*cli, "images", "--help"], capture_output=True,
                      check=False).returncode != 0:
        return
    subprocess.run([*cli, "docker", "up"], check=False, timeout=900)
    subprocess.run([*cli, "images", "--only", "pushrelay"], check=False, timeout=1800)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "node_down: takes the session's node stack down (runs after the other "
        "node tests)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move ``node_down`` tests behind the last other test of this directory."""
    here = Path(__file__).parent
    down = [item for item in items if item.get_closest_marker("node_down")]
    if not down:
        return
    rest = [item for item in items if not item.get_closest_marker("node_down")]
    after = max((i for i, item in enumerate(rest) if here in item.path.parents), default=-1) + 1
    items[:] = [*rest[:after], *down, *rest[after:]]


@pytest.fixture(scope="session")
def node_lock() -> Iterator[None]:
    STATE.parent.mkdir(parents=True, exist_ok=True)
    with (STATE.parent / "devstack-node.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def node_stack(node_lock: None) -> Iterator[Devstack]:
    if os.geteuid() != 0:
        pytest.skip("the devstack's node needs root (bridge, iptables, cgroups, containerd)")
    stack = Devstack(STATE, node=True)
    started = time.monotonic()
    stack.up()
    record("devstack_up_s", round(time.monotonic() - started, 1))
    try:
        yield stack
    finally:
        stack.down(purge=True)
        MEASUREMENTS.write_text(json.dumps(MEASURED, indent=2))


def _image_id() -> str:
    return _docker("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.decode().strip()


def _stale() -> list[str]:
    return stale_sources(recorded_hashes(IMAGE), ROOT)


@pytest.fixture(scope="session")
def product_image(node_stack: Devstack) -> str:
    """``IMAGE`` from the local Docker engine, built from this checkout (rebuilt when
    missing or when another checkout's build holds the tag), imported into the
    node's containerd."""
    if not _product_image_present() or _stale():
        _build_product_image()
    if not _product_image_present():
        pytest.skip(f"no {IMAGE} image in a local Docker engine (make image)")
    built = _image_id()
    stale = _stale()
    assert not stale, (f"{IMAGE} is not built from this checkout ({len(stale)} files differ: "
                       f"{stale[:5]}); `make image` builds it")
    archive = node_stack.paths.root / "node" / "image.tar"
    started = time.monotonic()
    out = _docker("save", "-o", str(archive), IMAGE)
    assert out.returncode == 0, out.stderr.decode()
    assert _image_id() == built, f"{IMAGE} was re-tagged while it was saved: run again"
    node_stack.import_image(archive, containerd.image_ref(IMAGE))
    archive.unlink()
    record("image_import_s", round(time.monotonic() - started, 1))
    return IMAGE


@pytest.fixture(scope="session")
async def node_kube(node_stack: Devstack) -> AsyncIterator[ApiClient]:
    api = await new_api_client(str(node_stack.kubeconfig))
    try:
        yield api
    finally:
        await api.close()
