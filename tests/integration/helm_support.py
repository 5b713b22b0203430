"""charts/pushrelay through the cached helm binary: lint, render, install.

helm runs with its cache, config and data directories in a temporary directory
(nothing is read from or written to the user's ~/.config/helm), and with
``KUBECONFIG=/dev/null`` unless a command is meant to reach a cluster.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pushrelay_devstack.paths import KUBERNETES_VERSION
from pushrelay_devstack.tools import ensure_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pushrelay"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path

    def run(self, *args: str, kubeconfig: str = os.devnull, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        proc = subprocess.run([str(self.binary), *args], env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def values_args(self, values: dict[str, Any] | Path | None) -> list[str]:
        if values is None:
            return []
        path = values if isinstance(values, Path) else values_file(self.home, values)
        return ["--values", str(path)]

    def template(self, values: dict[str, Any] | Path | None = None, *,
                 release: str = "pushrelay", namespace: str = "pushrelay",
                 extra: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The objects ``helm template`` renders (hooks and tests included)."""
        out = self.run("template", release, str(CHART), "--namespace", namespace,
                       "--kube-version", KUBERNETES_VERSION, *self.values_args(values),
                       *extra).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def template_error(self, values: dict[str, Any] | Path | None) -> str:
        """What ``helm template`` says when it refuses ``values`` (it must refuse)."""
        proc = self.run("template", "pushrelay", str(CHART), "--kube-version",
                        KUBERNETES_VERSION, *self.values_args(values), check=False)
        assert proc.returncode != 0, f"helm template accepted {values}"
        return proc.stderr

    def lint(self, values: dict[str, Any] | Path | None = None) -> str:
        """``helm lint --strict`` output, stdout and stderr (where it reports a
        template's ``fail`` as INFO without failing)."""
        proc = self.run("lint", "--strict", str(CHART), "--kube-version", KUBERNETES_VERSION,
                        *self.values_args(values))
        return proc.stdout + proc.stderr


def helm(home: Path) -> Helm:
    """The cached helm (built from Go modules on first use, like the devstack's binaries)."""
    binary = ensure_helm(lambda msg: print(f"devstack: {msg}", file=sys.stderr))
    home.mkdir(parents=True, exist_ok=True)
    return Helm(binary, home)


def values_file(directory: Path, values: dict[str, Any]) -> Path:
    """``values`` as a file for ``--values``."""
    text = yaml.safe_dump(values)
    path = directory / f"values-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    path.write_text(text)
    return path
