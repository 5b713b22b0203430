"""tests/node/image_sources.stale_sources: an image's install record against a checkout."""

from __future__ import annotations

from pathlib import Path

from tests.node.image_sources import record_hash, stale_sources


def checkout(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def record(files: dict[str, bytes]) -> dict[str, str]:
    return {name: record_hash(data) for name, data in files.items()}


SOURCES = {"pkg/__init__.py": b"", "pkg/a.py": b"A = 1\n", "pkg/sub/b.py": b"B = 2\n"}


def test_the_same_files_are_not_stale(tmp_path: Path) -> None:
    built = {**record(SOURCES), "pkg-0.1.dist-info/METADATA": "x", "../../bin/pkg": "y"}
    assert stale_sources(built, checkout(tmp_path, SOURCES)) == []


def test_a_changed_or_removed_file_is_stale(tmp_path: Path) -> None:
    root = checkout(tmp_path, {**SOURCES, "pkg/a.py": b"A = 3\n"})
    (root / "pkg/sub/b.py").unlink()
    assert stale_sources(record(SOURCES), root) == ["changed: pkg/a.py", "changed: pkg/sub/b.py"]


def test_a_new_file_in_a_shipped_directory_is_stale(tmp_path: Path) -> None:
    root = checkout(tmp_path, {**SOURCES, "pkg/new.py": b""})
    assert stale_sources(record(SOURCES), root) == ["missing: pkg/new.py"]


def test_a_directory_the_image_leaves_out_is_not_compared(tmp_path: Path) -> None:
    root = checkout(tmp_path, {**SOURCES, "pkg/devtools/tool.py": b"", "tests/t.py": b""})
    assert stale_sources(record(SOURCES), root) == []
