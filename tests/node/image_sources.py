"""Is a local image of pushrelay built from this checkout?

On a machine where several checkouts build the same tag (``pushrelay:latest``),
the image in the engine may hold another branch's code. The image's ``pip``
RECORD lists every installed file with its sha256; ``stale_sources`` compares
it with the checkout: a recorded source file whose bytes differ, and a ``.py``
file of the checkout in a package directory the image has but without that
file. Directories the image leaves out as a whole (the devstack distribution, by
compose/Dockerfile) are not compared.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

DISTRIBUTION = "pushrelay"
_RECORD = ("import importlib.metadata as m, json; print(json.dumps({str(f): f.hash.value "
           f"for f in m.files({DISTRIBUTION!r}) if f.hash and f.hash.mode == 'sha256'}}))")


def recorded_hashes(image: str, timeout: float = 120) -> dict[str, str]:
    """``{path: urlsafe-base64 sha256}`` of the files the image's distribution installed."""
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", image,
         "-c", _RECORD], capture_output=True, text=True, timeout=timeout, check=False)
    assert out.returncode == 0, f"cannot read {image}'s install record: {out.stderr[-500:]}"
    hashes: dict[str, str] = json.loads(out.stdout)
    return hashes


def record_hash(data: bytes) -> str:
    """A file's hash as pip writes it in RECORD."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def stale_sources(recorded: Mapping[str, str], root: Path) -> list[str]:
    """Source paths where the image (``recorded``) and the checkout ``root`` differ:
    ``changed: p`` (bytes differ or gone from the checkout), ``missing: p`` (a
    checkout ``.py`` file the image lacks in a directory it has)."""
    def in_package(path: PurePosixPath) -> bool:
        return len(path.parts) > 1 and (root / path.parts[0] / "__init__.py").is_file()

    ours = {PurePosixPath(p): h for p, h in recorded.items() if in_package(PurePosixPath(p))}
    problems = []
    for path, digest in sorted(ours.items()):
        local = root / path
        if not local.is_file() or record_hash(local.read_bytes()) != digest:
            problems.append(f"changed: {path}")
    for directory in sorted({path.parent for path in ours}):
        for local in sorted((root / directory).glob("*.py")):
            if directory / local.name not in ours:
                problems.append(f"missing: {directory / local.name}")
    return problems
