"""Pure parts of the container tooling: go.mod excludes, recipe keys, settings parsing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pushrelay_devstack import apt, docker, gobuild, images, tckafka
from pushrelay_devstack.errors import DevstackError

COMPOSE_GOMOD = """module github.com/docker/compose/v2

go 1.24.9

require (
\tgithub.com/AlecAivazis/survey/v2 v2.3.7
)

exclude (
\t// FIXME: remove this once kubernetes updated their dependencies.
\t//
\tgithub.com/davecgh/go-spew v1.1.2-0.20180830191138-d8f796af33cc
\tgithub.com/pmezard/go-difflib v1.0.1-0.20181226105442-5d4384ee4fb2 // why
)

exclude example.com/single v1.0.0
"""


def test_excludes_of_a_gomod_blocks_and_single_lines() -> None:
    assert gobuild.excludes(COMPOSE_GOMOD) == [
        "github.com/davecgh/go-spew v1.1.2-0.20180830191138-d8f796af33cc",
        "github.com/pmezard/go-difflib v1.0.1-0.20181226105442-5d4384ee4fb2",
        "example.com/single v1.0.0",
    ]
    assert gobuild.excludes("module x\n\nrequire a/b v1\n") == []


def test_base_recipe_key_follows_its_content() -> None:
    recipe = images.BaseRecipe("python", ("python3",))
    assert recipe.digest == images.BaseRecipe("python", ("python3",)).digest
    changed = dataclasses.replace(recipe, packages=("python3", "curl"))
    assert changed.digest != recipe.digest
    assert recipe.tag == f"pushrelay-base/python:bookworm-{recipe.digest}"
    assert recipe.tarball.name == f"python-bookworm-{recipe.digest}.tar"


def test_apt_missing_names_packages_of_absent_commands() -> None:
    assert apt.missing({"sh": "dash", "no-such-command-xyz": "xyz", "also-missing-xyz": "xyz"}) \
        == ["xyz"]


@pytest.mark.parametrize(("value", "expected"), [
    (None, False), ("devstack", False), ("testcontainers", True), (" TestContainers ", True),
])
def test_test_kafka_choice(monkeypatch: pytest.MonkeyPatch, value: str | None,
                           expected: bool) -> None:
    if value is None:
        monkeypatch.delenv(tckafka.ENV, raising=False)
    else:
        monkeypatch.setenv(tckafka.ENV, value)
    assert tckafka.wanted() is expected


def test_test_kafka_choice_rejects_typos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tckafka.ENV, "testcontainer")
    with pytest.raises(ValueError, match="testcontainers"):
        tckafka.wanted()


def test_docker_socket_from_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert docker.socket_path() == docker.DEFAULT_SOCKET
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert docker.socket_path() == Path("/run/user/1000/docker.sock")
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
    with pytest.raises(DevstackError, match="unix://"):
        docker.socket_path()


def test_no_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'none.sock'}")
    assert docker.ping(tmp_path / "none.sock") is False
    with pytest.raises(DevstackError, match="devstack docker up"):
        docker.engine()


def test_cli_without_the_devstack_offers_the_services(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The production image has no pushrelay-devstack distribution: ``--help`` offers
    the services only, and a dev command says how to install it, nothing fails."""
    from pushrelay.cli import main

    monkeypatch.setattr(main, "entry_points", lambda group: [])
    help_text = main.build_parser().format_help()
    for command in ("ingress", "router", "refresher", "all-in-one"):
        assert command in help_text
    assert "devstack" not in help_text and "demo" not in help_text
    assert main.main(["devstack", "docker", "up"]) == 2
    assert "pip install -e ./devstack" in capsys.readouterr().err
