"""`pushrelay devstack tool NAME`: the cached binary's path, or the binary run with args."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushrelay.cli.main import main
from pushrelay_devstack.tools import HELM_VERSION


@pytest.fixture
def cached_helm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A stand-in helm in a private cache: records its arguments, exits 3."""
    monkeypatch.setenv("PUSHRELAY_CACHE_DIR", str(tmp_path / "cache"))
    binary = tmp_path / "cache" / "bin" / f"helm-{HELM_VERSION}"
    binary.parent.mkdir(parents=True)
    binary.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\nexit 3\n')
    binary.chmod(0o755)
    return binary


def test_prints_the_cached_binary(cached_helm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devstack", "tool", "helm"]) == 0
    assert capsys.readouterr().out.strip() == str(cached_helm)


def test_runs_it_with_the_arguments_after_the_separator(cached_helm: Path) -> None:
    assert main(["devstack", "tool", "helm", "--", "lint", "--strict", "charts/x"]) == 3
    assert (cached_helm.parent.parent.parent / "args").read_text().split() == [
        "lint", "--strict", "charts/x"]


def test_a_missing_toolchain_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PUSHRELAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no go here
    assert main(["devstack", "tool", "helm"]) == 1
    assert "Go toolchain" in capsys.readouterr().err


def test_unknown_tools_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["devstack", "tool", "kubectl-but-misspelt"])
    assert "invalid choice" in capsys.readouterr().err


def test_docker_compose_is_a_tool_too() -> None:
    """``make tools`` builds it before pytest collects the Compose tests."""
    from pushrelay_devstack.tools import TOOLS

    assert set(TOOLS) == {"helm", "docker-compose"}
