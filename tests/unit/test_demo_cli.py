"""``pushrelay demo [--embedded]``: the arguments reach the settings the demo runs with.

No devstack and no services here: the stack and the demo coroutine are stand-ins
that record what they were given (the demo itself runs against real services in
``make demo`` and by hand).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pushrelay.cli import main as cli
from pushrelay.infra.settings import Settings
from pushrelay_devstack import demo

ENV = {"KUBECONFIG": "/state/kubeconfig", "PUSHRELAY_KAFKA_BOOTSTRAP": "127.0.0.1:39092"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings also read PUSHRELAY_* from the process (``devstack exec`` sets some)."""
    for key in [k for k in os.environ if k.startswith("PUSHRELAY_")]:
        monkeypatch.delenv(key)


@pytest.mark.parametrize(("argv", "embedded"), [(["demo"], False),
                                                (["demo", "--embedded", "--once"], True)])
def test_the_flag_is_parsed(argv: list[str], embedded: bool) -> None:
    args = cli.build_parser().parse_args(argv)
    assert args.embedded is embedded
    assert args.func is demo._run


def test_embedded_settings_name_the_bus_and_the_directory_and_no_kafka(tmp_path: Path) -> None:
    settings = demo.demo_settings(ENV, 18080, embedded=True, data_dir=tmp_path / "log")
    assert settings.bus == "embedded" and settings.data_dir == str(tmp_path / "log")
    assert settings.kafka_bootstrap == Settings.model_fields["kafka_bootstrap"].default
    assert settings.kubeconfig == ENV["KUBECONFIG"]
    assert (settings.ingress_port, settings.base_url) == (18080, "http://127.0.0.1:18080")
    assert settings.write_status is True


def test_kafka_settings_use_the_devstack_broker(tmp_path: Path) -> None:
    settings = demo.demo_settings(ENV, 18080, embedded=False, data_dir=tmp_path / "log")
    assert settings.bus == "kafka" and settings.data_dir is None
    assert settings.kafka_bootstrap == ENV["PUSHRELAY_KAFKA_BOOTSTRAP"]


@pytest.mark.parametrize("embedded", [False, True])
def test_run_hands_the_demo_its_settings(
    embedded: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: dict[str, Any] = {}

    class Stack:
        paths = SimpleNamespace(root=tmp_path)

        def healthy(self) -> bool:
            return True  # already up: the demo leaves it running

        def up(self) -> dict[str, str]:
            return dict(ENV)

    async def fake_demo(settings: Settings, once: bool) -> int:
        seen.update(settings=settings, once=once)
        return 0

    monkeypatch.setattr("pushrelay_devstack.stack.Devstack", Stack)
    monkeypatch.setattr(demo, "demo", fake_demo)
    monkeypatch.setattr(demo, "free_port", lambda preferred: preferred)
    # process-wide set-up the real run does: not in a test session
    monkeypatch.setattr(demo.logs, "configure", lambda *args, **kwargs: None)
    monkeypatch.setattr(demo, "install_event_loop_policy", lambda: None)
    argv = ["demo", "--once", "--port", "18081", *(["--embedded"] if embedded else [])]
    assert cli.main(argv) == 0
    settings = seen["settings"]
    assert seen["once"] is True and settings.ingress_port == 18081
    if embedded:
        data_dir = demo.embedded_data_dir(tmp_path)
        assert settings.bus == "embedded" and settings.data_dir == str(data_dir)
        assert data_dir.is_dir() and data_dir.is_relative_to(tmp_path)
        assert "embedded bus" in capsys.readouterr().out
    else:
        assert settings.bus == "kafka"
        assert settings.kafka_bootstrap == ENV["PUSHRELAY_KAFKA_BOOTSTRAP"]
