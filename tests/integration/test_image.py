"""The production image (compose/Dockerfile), built and run on a real engine.

It holds the services and their dependencies only: no devstack, no tests, no
test tools, no compilers; it runs as uid 10001, which owns its state directory
/var/lib/pushrelay (the spool's, the embedded log's); ``pushrelay ingress`` starts and
answers ``/healthz`` with neither Kafka nor Kubernetes reachable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pushrelay_devstack import compose, docker, images
from pushrelay_devstack.containers import start_time

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "go", "javac", "make", "as", "ld")
TEST_TOOLS = ("pytest", "hypothesis", "mypy", "ruff", "schemathesis", "testcontainers")


def _progress(msg: str) -> None:
    print(f"devstack: {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def engine() -> docker.Engine:
    return docker.engine_up(_progress)


@pytest.fixture(scope="session")
def image(engine: docker.Engine) -> Iterator[str]:
    yield images.ensure_pushrelay(engine, ROOT, _progress)


def run_in(engine: docker.Engine, image: str, *argv: str, entrypoint: str | None = None) -> str:
    args = ["run", "--rm", "--network", "none"]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    out = engine.run([*args, image, *argv], timeout=120).stdout
    return out.decode()


def test_runs_as_uid_10001(engine: docker.Engine, image: str) -> None:
    config = orjson.loads(engine.run(["image", "inspect", image]).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert run_in(engine, image, "-u", entrypoint="id").strip() == "10001"
    assert config["Entrypoint"] == ["pushrelay"]


def test_state_directory_belongs_to_10001_and_the_spool_is_set(
    engine: docker.Engine, image: str
) -> None:
    """/var/lib/pushrelay (spool, embedded log) is the user's, and no VOLUME is declared
    (every shipped deployment mounts a named volume, emptyDir or claim there)."""
    config = orjson.loads(engine.run(["image", "inspect", image]).stdout)[0]["Config"]
    assert "PUSHRELAY_SPOOL_DIR=/var/lib/pushrelay/spool" in config["Env"]
    assert not config.get("Volumes")
    probe = ("stat -c '%u:%g %a' /var/lib/pushrelay /var/lib/pushrelay/spool"
             " && touch /var/lib/pushrelay/spool/probe && echo writable")
    assert run_in(engine, image, "-c", probe, entrypoint="sh").split("\n") == [
        "10001:10001 750", "10001:10001 750", "writable", ""]


def test_holds_no_devstack_tests_or_test_tools(engine: docker.Engine, image: str) -> None:
    script = (
        "import importlib.metadata as md, importlib.util as u, json, pathlib;"
        "ours = [pathlib.Path(u.find_spec(m).origin).parent"
        " for m in ('pushrelay', 'ingress', 'router', 'refresher')];"
        "print(json.dumps({"
        "'devstack': u.find_spec('pushrelay_devstack') is not None,"
        "'tests': u.find_spec('tests') is not None,"
        "'paths': sorted(str(p) for root in ours for p in root.rglob('*')"
        " if 'devstack' in p.parts or p.name in ('tests', 'conftest.py')),"
        "'dists': sorted(d.metadata['Name'].lower() for d in md.distributions()),"
        "'services': all(u.find_spec(m) for m in ('ingress', 'router', 'refresher')),"
        "}))"
    )
    found = orjson.loads(run_in(engine, image, "-c", script, entrypoint="python"))
    assert found["services"]
    assert not found["devstack"] and not found["tests"]
    assert found["paths"] == []
    assert "pushrelay" in found["dists"]
    assert not set(TEST_TOOLS) & set(found["dists"]), found["dists"]
    assert "pip" not in found["dists"]


def test_has_no_compilers(engine: docker.Engine, image: str) -> None:
    probe = " ".join(f"command -v {c} || true;" for c in COMPILERS)
    assert run_in(engine, image, "-c", probe, entrypoint="sh").split() == []


def test_cli_offers_services_not_devstack(engine: docker.Engine, image: str) -> None:
    usage = run_in(engine, image, "--help")
    for command in ("ingress", "router", "refresher", "all-in-one"):
        assert command in usage
    assert "devstack" not in usage


def test_ingress_starts_and_answers_healthz(
    engine: docker.Engine, image: str, devstack_env: dict[str, str], tmp_path: Path
) -> None:
    kubeconfig = compose.readable_kubeconfig(Path(devstack_env["KUBECONFIG"]), tmp_path)
    times = start_time(engine, image, kubeconfig, devstack_env["PUSHRELAY_KAFKA_BOOTSTRAP"],
                       timeout=300)
    assert times.healthz > 0
    print(f"{image}: created in {times.create:.1f}s, process start to /healthz 200 in "
          f"{times.healthz:.2f}s, size {images.image_size(engine, image) / 1e6:.0f} MB")
