"""The production CLI never imports the development tools; they register themselves.

``pushrelay devstack`` and ``pushrelay demo`` come from the separate
``pushrelay-devstack`` distribution through the ``pushrelay.commands``
entry-point group; without it they say how to get it.
"""

from __future__ import annotations

from typing import Any

import pytest

from pushrelay.cli import main as cli


def test_dev_commands_come_from_the_entry_point_group() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["devstack", "status"])
    assert args.func.__module__ == "pushrelay_devstack.cli"
    assert parser.parse_args(["demo", "--once"]).func.__module__ == "pushrelay_devstack.demo"


@pytest.mark.parametrize("argv", [["devstack", "up", "--state-dir", "/x"], ["demo", "--once"]])
def test_without_the_devstack_distribution_they_say_how_to_get_it(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"pushrelay {argv[0]}" in err and "make install" in err
    assert "pip install -e ./devstack" in err


def test_a_broken_plugin_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    class Broken:
        name = "devstack"

        def load(self) -> Any:
            raise ImportError("No module named 'cryptography'")

    monkeypatch.setattr(cli, "entry_points", lambda group: [Broken()])
    assert cli.main(["devstack", "up"]) == 2
    assert "cryptography" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["publish", "--repo", "r", "--tag", "t"])
