"""`pushrelay devstack` on a state directory where nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushrelay.cli.main import main
from pushrelay_devstack import gobuild, kafka
from pushrelay_devstack.errors import DevstackError


def test_env_before_up_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devstack", "--state-dir", str(tmp_path), "env"]) == 1
    assert "pushrelay devstack up" in capsys.readouterr().err


def test_status_and_down_when_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["devstack", "--state-dir", str(tmp_path), "status"]) == 1
    out = capsys.readouterr().out
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kafka"):
        assert f"{name}" in out
    assert out.count("stopped") == 4
    assert main(["devstack", "--state-dir", str(tmp_path), "down"]) == 0
    assert "nothing" in capsys.readouterr().out


def test_missing_toolchains_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no go, java or mvn here
    monkeypatch.setenv("PUSHRELAY_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DevstackError, match="Go toolchain"):
        gobuild.ensure_etcd(lambda _msg: None)
    with pytest.raises(DevstackError, match="java"):
        kafka.check_java()
    with pytest.raises(DevstackError, match="mvn"):
        kafka.ensure_jars(lambda _msg: None)


def test_up_failure_prints_the_component_and_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PUSHRELAY_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["devstack", "--state-dir", str(tmp_path / "s"), "up"]) == 1
    err = capsys.readouterr().err
    assert "devstack: error: kafka:" in err and "mvn" in err


def test_error_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("\n".join(f"line {i}" for i in range(100)))
    exc = DevstackError("etcd", "failed", log)
    assert str(exc) == f"etcd: failed (log: {log})"
    assert exc.tail(2) == "line 98\nline 99"
