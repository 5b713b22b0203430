"""One service alone on the embedded bus is refused: exit 2, one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushrelay.cli import services
from pushrelay.infra.settings import IngressSettings, RefresherSettings, RouterSettings


@pytest.mark.parametrize(("name", "settings_type"), [
    ("ingress", IngressSettings), ("router", RouterSettings), ("refresher", RefresherSettings)])
def test_a_single_service_refuses_the_embedded_bus(
    name: str, settings_type: type[RouterSettings], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_type(bus="embedded", data_dir=str(tmp_path))
    assert services.run([name], settings) == 2
    err = capsys.readouterr().err
    assert "the embedded bus runs only in all-in-one" in err
    assert "pushrelay all-in-one" in err
    assert list(tmp_path.iterdir()) == []  # refused before anything was opened
