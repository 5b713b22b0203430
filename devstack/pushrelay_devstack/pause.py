"""The pod sandbox ("pause") image, made here: no registry is reachable.

A static Go binary that waits for SIGINT/SIGTERM and reaps orphans (it is
PID 1 of each pod sandbox), wrapped as the only file of a one-layer image
``FROM scratch`` in ``docker save`` format, which ``ctr images import`` reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from pushrelay_devstack import gobuild

REF = "pushrelay.local/pause:3.10"
VERSION = "3.10"
_SOURCE = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsigs := make(chan os.Signal, 8)
\tsignal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor sig := range sigs {
\t\tif sig != syscall.SIGCHLD {
\t\t\treturn
\t\t}
\t\tfor {
\t\t\tpid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
\t\t\tif pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""


def ensure_binary(progress: gobuild.Progress) -> Path:
    return gobuild.ensure_local_main("pause", VERSION, _SOURCE, progress)


def _tar(members: dict[str, tuple[bytes, int]]) -> bytes:
    """A deterministic tar of ``name -> (content, mode)``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_archive(binary: bytes, ref: str = REF, entrypoint: str = "/pause") -> bytes:
    """A ``docker save`` archive of one image whose only file is ``entrypoint``."""
    layer = _tar({entrypoint.lstrip("/"): (binary, 0o755)})
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [entrypoint], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created_by": "pushrelay devstack pause image"}],
    }, sort_keys=True).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{
        "Config": f"{config_digest}.json",
        "RepoTags": [ref],
        "Layers": [f"{layer_digest}/layer.tar"],
    }]).encode()
    return _tar({
        f"{config_digest}.json": (config, 0o644),
        f"{layer_digest}/layer.tar": (layer, 0o644),
        "manifest.json": (manifest, 0o644),
    })
