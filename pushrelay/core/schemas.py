"""Write the shipped JSON Schema files (``schemas/``) from the event models.

``python -m pushrelay.core.schemas`` regenerates them; a unit test fails when the
committed files drift from the models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from pushrelay.core.events import json_schemas

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render() -> dict[str, bytes]:
    return {
        f"{name}.json": orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        for name, doc in json_schemas().items()
    }


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, content in render().items():
        path = directory / filename
        path.write_bytes(content)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(path)
