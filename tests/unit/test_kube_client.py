"""The API client reads proxy settings from the environment once, not per call."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushrelay.infra.kube.client import env_proxy_for, new_api_client

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://10.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: "t"}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
"""


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                 "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_no_proxy_in_the_environment() -> None:
    assert env_proxy_for("https://10.0.0.1:6443") is None


def test_https_proxy_applies_to_the_api_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.internal:3128")
    assert env_proxy_for("https://10.0.0.1:6443") == "http://user:pw@proxy.internal:3128"


def test_no_proxy_exempts_the_api_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.1")
    assert env_proxy_for("https://10.0.0.1:6443") is None


async def test_client_session_does_not_trust_env_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    api = await new_api_client(str(path))
    try:
        session = api.rest_client.pool_manager
        assert session.trust_env is False
        assert not session.closed and session.connector is not None
        assert api.rest_client.proxy == "http://proxy.internal:3128"
    finally:
        await api.close()
    assert session.closed and session.connector is None
