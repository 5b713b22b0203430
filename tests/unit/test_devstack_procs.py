"""Devstack process handling: detached start, PID records, group stop, ports."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from pushrelay_devstack import procs
from pushrelay_devstack.errors import DevstackError


def _start(tmp_path: Path, script: str) -> procs.ProcRecord:
    return procs.start(
        "demo", ["sh", "-c", script], log=tmp_path / "demo.log",
        record=tmp_path / "demo.json", port=0,
    )


def test_start_records_and_stop_kills_the_whole_group(tmp_path: Path) -> None:
    rec = _start(tmp_path, "sleep 60 & echo child=$!; wait")
    assert procs.is_running(rec)
    assert os.getpgid(rec.pid) == rec.pid  # its own session and group
    loaded = procs.ProcRecord.load(tmp_path / "demo.json")
    assert loaded == rec
    deadline = time.monotonic() + 5
    while not (found := re.search(r"child=(\d+)", (tmp_path / "demo.log").read_text())):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(found.group(1))
    procs.stop(rec, timeout=5)
    assert not procs.is_running(rec)
    assert procs.start_ticks(child) is None  # the grandchild went with the group


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    rec = _start(tmp_path, "trap '' TERM; while :; do sleep 0.1; done")
    time.sleep(0.2)
    started = time.monotonic()
    procs.stop(rec, timeout=0.5)
    assert not procs.is_running(rec)
    assert time.monotonic() - started < 5


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    rec = procs.ProcRecord("x", os.getpid(), 1, 0, str(tmp_path / "x.log"))
    assert not procs.is_running(rec)  # same pid, different start time
    procs.stop(rec)  # and so it is never signalled
    assert procs.ProcRecord.load(tmp_path / "missing.json") is None


def test_ports() -> None:
    port = procs.free_port()
    assert procs.port_is_free(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not procs.port_is_free(port)
        with pytest.raises(DevstackError, match=f"127.0.0.1:{port} is already in use"):
            procs.require_free("kafka", port)


def test_wait_until_reports_an_early_exit_with_its_log(tmp_path: Path) -> None:
    rec = _start(tmp_path, "echo boom; exit 3")
    with pytest.raises(DevstackError) as err:
        procs.wait_until("demo", lambda: False, timeout=10, rec=rec)
    assert "exited during start-up" in str(err.value)
    assert err.value.log == tmp_path / "demo.log"
    assert "boom" in err.value.tail()


def test_wait_until_times_out_with_last_error() -> None:
    def check() -> bool:
        raise ConnectionRefusedError("nope")

    with pytest.raises(DevstackError, match="not ready after 0s.*nope"):
        procs.wait_until("demo", check, timeout=0.3, interval=0.05)
