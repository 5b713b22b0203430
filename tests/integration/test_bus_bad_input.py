"""Bad files where a bus keeps its data: a clear refusal at start, never silent loss.

The embedded bus's data directory (``PUSHRELAY_BUS=embedded``,
``PUSHRELAY_DATA_DIR``) and the ingress's spool directory (``PUSHRELAY_SPOOL_DIR``)
hold SQLite databases (docs/bus.md). Each test lets the real process create its
files (a clean start and SIGTERM on the devstack), then damages them:

* ``garbage`` — the database replaced by bytes that are no database at all;
* ``foreign`` — a sound SQLite database that is not ours (another application);
* ``torn`` — our database with its pages after the first overwritten (what a
  bad disk or a careless copy leaves).

The process must then exit non-zero within the start budget, with a message
naming the file, and leave the file as it was (never re-created empty).
The files are found by their SQLite header, so the test does not depend on
their names.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pushrelay_devstack.procs import free_port
from tests.faults.harness import sqlite_files

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_BUDGET = 90.0  # s: a refusal comes long before; a hang fails the test


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(max(path.stat().st_size, 8192)))


def _foreign(path: Path) -> None:
    path.unlink()
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA application_id = 1234567")
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        db.execute("INSERT INTO notes (body) VALUES ('not a pushrelay log')")
        db.commit()
    finally:
        db.close()


def _torn(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 4096
    if page == 1:
        page = 65536
    if len(data) <= page:  # one page only: tear the page itself after its header
        data[100:] = os.urandom(len(data) - 100)
    else:
        data[page:] = os.urandom(len(data) - page)
    path.write_bytes(bytes(data))


DAMAGE: dict[str, Callable[[Path], None]] = {"garbage": _garbage, "foreign": _foreign,
                                             "torn": _torn}


def _env(devstack_env: dict[str, str], **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PUSHRELAY_") and k != "KUBECONFIG"}
    prefix = f"t{uuid.uuid4().hex[:8]}."
    env.update(devstack_env)
    env.update({"PUSHRELAY_TOPIC_PREFIX": prefix, "PUSHRELAY_INGRESS_HOST": "127.0.0.1",
                "PUSHRELAY_HEALTH_HOST": "127.0.0.1", "PUSHRELAY_LOG_FORMAT": "text",
                "PUSHRELAY_INGRESS_PORT": str(free_port()),
                "PUSHRELAY_HEALTH_PORT": str(free_port()),
                "PUSHRELAY_ROUTER_GROUP": f"{prefix}router",
                "PUSHRELAY_REFRESHER_GROUP": f"{prefix}refresher",
                "PYTHONUNBUFFERED": "1"})
    env.update(settings)
    return env


def _ready(env: dict[str, str]) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(  # noqa: S310 - loopback, our own process
                f"http://127.0.0.1:{env['PUSHRELAY_HEALTH_PORT']}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _clean_start(argv: list[str], env: dict[str, str], log: Path) -> None:
    """Start, wait for readiness, SIGTERM: the process created its files and exits 0."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, *argv], env=env, cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_BUDGET
        while not _ready(env):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _refused(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    """Start on the damaged files: the exit code and the output."""
    proc = subprocess.run([sys.executable, *argv], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=START_BUDGET)
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    log.write_text(text)
    return proc.returncode, text


def _check(argv: list[str], env: dict[str, str], directory: Path, damage: str,
           tmp_path: Path) -> None:
    _clean_start(argv, env, tmp_path / "first.log")
    files = sqlite_files(directory)
    assert files, f"no SQLite database in {directory} after a clean start"
    target = files[0]
    DAMAGE[damage](target)
    before = target.read_bytes()
    code, text = _refused(argv, env, tmp_path / "second.log")
    assert code != 0, text[-3000:]
    assert str(target) in text or target.name in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert target.read_bytes() == before, "the damaged file was changed (re-created?)"


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_embedded_data_dir(devstack_env: dict[str, str], tmp_path: Path, damage: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = _env(devstack_env, PUSHRELAY_BUS="embedded", PUSHRELAY_DATA_DIR=str(data))
    _check(["-m", "pushrelay", "all-in-one"], env, data, damage, tmp_path)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_ingress_spool_dir(devstack_env: dict[str, str], tmp_path: Path, damage: str) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    env = _env(devstack_env, PUSHRELAY_SPOOL_DIR=str(spool))
    _check(["-m", "ingress"], env, spool, damage, tmp_path)
