"""A kubeconfig that cannot be used is one clear error naming it, never a traceback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from pushrelay.cli.main import main
from pushrelay.infra.kube.client import new_api_client
from pushrelay.infra.kube.errors import KubeConfigError
from pushrelay.infra.runtime import serve


@pytest.mark.parametrize("content", [None, "", "garbage: [\n", "apiVersion: v1\nkind: Config\n"])
async def test_unusable_kubeconfig_is_a_kubeconfig_error(tmp_path: Path,
                                                        content: str | None) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KubeConfigError, match=f"kubeconfig {path}"):
        await new_api_client(str(path))


async def test_no_kubeconfig_outside_a_pod_names_the_in_cluster_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match="in-cluster config"):
        await new_api_client(None)


class _NeedsKube:
    name = "needs-kube"

    def __init__(self, path: str) -> None:
        self.crashed = asyncio.Event()
        self.path = path

    async def start(self) -> None:
        await new_api_client(self.path)

    async def stop(self) -> None:
        return None

    def readiness(self) -> str | None:
        return None


async def test_a_service_with_an_unusable_kubeconfig_fails_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    missing = str(tmp_path / "missing")
    with caplog.at_level(logging.ERROR, logger="pushrelay.infra.runtime"):
        code = await serve([_NeedsKube(missing)], shutdown_timeout=1)  # type: ignore[list-item]
    assert code == 1
    (record,) = [r for r in caplog.records if r.name == "pushrelay.infra.runtime"]
    assert record.exc_info is None or record.exc_info is False
    assert "no such file" in record.getMessage() + str(getattr(record, "error", ""))


def test_cli_reports_an_unusable_kubeconfig(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert main(["explain", "quay.io/a/b", "v1", "--kubeconfig", str(missing)]) == 2
    assert f"kubeconfig {missing}: no such file" in capsys.readouterr().err
