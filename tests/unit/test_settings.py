"""Settings: PUSHRELAY_* variables with their documented names and defaults
(docs/contracts.md, "Settings")."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pushrelay.infra.settings import Settings


def test_defaults_match_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("PUSHRELAY_"):
            monkeypatch.delenv(name)
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.topic_prefix == "pushrelay."
    assert (s.ingress_host, s.ingress_port) == ("0.0.0.0", 8080)
    assert s.base_url == "http://localhost:8080"
    assert s.write_status is False
    assert s.system_resources_namespace == "kargo-system-resources"
    assert s.deprecations() == []
    assert s.refresh_min_interval == 2
    assert (s.refresh_qps, s.refresh_burst) == (20, 50)
    assert s.log_level == "INFO"
    assert s.push_topic == "pushrelay.push-events"
    assert s.refresh_topic == "pushrelay.refresh-requests"
    assert s.dead_letter_topic == "pushrelay.dead-letters"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(__import__("os").environ):
        if name.startswith("PUSHRELAY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_system_resources_namespace_is_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PUSHRELAY_SYSTEM_RESOURCES_NAMESPACE", "kargo-sys")
    s = Settings()
    assert s.system_resources_namespace == "kargo-sys"
    assert s.deprecations() == []


def test_cluster_secrets_namespace_is_a_deprecated_alias(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PUSHRELAY_CLUSTER_SECRETS_NAMESPACE", "kargo-cluster-secrets")
    s = Settings()
    assert s.system_resources_namespace == "kargo-cluster-secrets"
    [line] = s.deprecations()
    assert "PUSHRELAY_CLUSTER_SECRETS_NAMESPACE is deprecated" in line
    assert "ignored" not in line


def test_the_new_name_wins_over_the_alias(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PUSHRELAY_CLUSTER_SECRETS_NAMESPACE", "kargo-cluster-secrets")
    clean_env.setenv("PUSHRELAY_SYSTEM_RESOURCES_NAMESPACE", "kargo-system-resources")
    s = Settings()
    assert s.system_resources_namespace == "kargo-system-resources"
    [line] = s.deprecations()
    assert "ignored" in line and "kargo-system-resources wins" in line


def test_the_alias_warns_once_at_start(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pushrelay.infra.runtime import log_deprecations

    clean_env.setenv("PUSHRELAY_CLUSTER_SECRETS_NAMESPACE", "old")
    with caplog.at_level("WARNING", logger="pushrelay.infra.runtime"):
        log_deprecations(Settings())
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "PUSHRELAY_SYSTEM_RESOURCES_NAMESPACE" in caplog.records[0].getMessage()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHRELAY_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    monkeypatch.setenv("PUSHRELAY_TOPIC_PREFIX", "x.")
    monkeypatch.setenv("PUSHRELAY_WRITE_STATUS", "true")
    monkeypatch.setenv("PUSHRELAY_REFRESH_MIN_INTERVAL", "0.5")
    monkeypatch.setenv("PUSHRELAY_LOG_LEVEL", "debug")
    monkeypatch.setenv("PUSHRELAY_BASE_URL", "https://relay.example.com/hooks/")
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.push_topic == "x.push-events"
    assert s.write_status is True
    assert s.refresh_min_interval == 0.5
    assert s.log_level == "DEBUG"
    assert s.base_url == "https://relay.example.com/hooks"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PUSHRELAY_INGRESS_PORT", "http"),
        ("PUSHRELAY_INGRESS_PORT", "70000"),
        ("PUSHRELAY_REFRESH_QPS", "0"),
        ("PUSHRELAY_REFRESH_BURST", "-1"),
        ("PUSHRELAY_LOG_LEVEL", "LOUD"),
        ("PUSHRELAY_WRITE_STATUS", "maybe"),
    ],
)
def test_bad_values_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert name.removeprefix("PUSHRELAY_").lower() in str(caught.value)


def test_each_process_validates_only_what_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad refresher knob does not stop a router or an ingress; all-in-one refuses it."""
    from pushrelay.cli.services import settings_for
    from pushrelay.infra.settings import IngressSettings, RouterSettings

    monkeypatch.setenv("PUSHRELAY_REFRESH_QPS", "0")
    assert type(settings_for(["router"])) is RouterSettings
    assert type(settings_for(["ingress"])) is IngressSettings
    with pytest.raises(SystemExit, match="PUSHRELAY_REFRESH_QPS"):
        settings_for(["refresher"])
    with pytest.raises(SystemExit, match="PUSHRELAY_REFRESH_QPS"):
        settings_for(["ingress", "router", "refresher"])


def test_router_settings_have_no_refresher_fields() -> None:
    from pushrelay.infra.settings import RouterSettings

    assert "refresh_qps" not in RouterSettings.model_fields
    assert "ingress_port" not in RouterSettings.model_fields
    assert "kafka_bootstrap" in RouterSettings.model_fields
