"""charts/pushrelay through the cached helm binary: lint, render, install.

helm runs with its cache, config and data directories in a temporary directory
(nothing is read from or written to the user's ~/.config/helm), and with
``KUBECONFIG=/dev/null`` unless a command is meant to reach a cluster
(``Release``: one release on one cluster, the devstack's or its node's).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import request_json
from pushrelay_devstack.paths import KUBERNETES_VERSION
from pushrelay_devstack.tools import ensure_helm
from tests.integration.conftest import temporary_namespace

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


@dataclass(frozen=True)
class Release:
    """Release ``name`` of the chart in ``namespace`` of the cluster ``kubeconfig``
    names; each command runs helm in a thread, so the event loop keeps going."""

    helm: Helm
    name: str
    namespace: str
    kubeconfig: str

    async def run(self, *args: str) -> str:
        """``helm <args> --namespace <namespace>`` against the cluster; its stdout
        (helm killed after 300 s)."""
        proc = await asyncio.to_thread(self.helm.run, *args, "--namespace", self.namespace,
                                       kubeconfig=self.kubeconfig, timeout=300)
        return proc.stdout

    async def install(self, values: Path) -> str:
        return await self.run("install", self.name, str(CHART), "--values", str(values))

    async def upgrade(self, values: Path) -> str:
        return await self.run("upgrade", self.name, str(CHART), "--values", str(values))

    async def uninstall(self) -> str:
        """``helm uninstall --wait``: returns once every object is gone (pods included);
        a release already uninstalled is not an error."""
        return await self.run("uninstall", self.name, "--wait", "--timeout", "2m",
                              "--ignore-not-found")


CLUSTER_SCOPED = ("/apis/rbac.authorization.k8s.io/v1/clusterroles",
                  "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                  "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
                  "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings")


async def cluster_scoped_of(api: ApiClient, release: str) -> list[str]:
    """Names of the cluster-scoped objects release ``release`` made that exist now."""
    found = []
    for path in CLUSTER_SCOPED:
        items = (await request_json(api, "GET", path))["items"]
        found += [o["metadata"]["name"] for o in items
                  if o["metadata"]["name"].startswith(f"{release}-")]
    return sorted(found)


@asynccontextmanager
async def restricted_namespace(api: ApiClient, prefix: str) -> AsyncIterator[str]:
    """A fresh namespace enforcing the "restricted" Pod Security Standard (as
    docs/deploy.md has the SRE label it; the chart does not create its namespace),
    deleted afterwards."""
    async with temporary_namespace(api, prefix) as name:
        await request_json(api, "PATCH", f"/api/v1/namespaces/{name}", body={
            "metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                    "pod-security.kubernetes.io/enforce-version": "latest"}}},
            content_type="application/merge-patch+json")
        yield name
