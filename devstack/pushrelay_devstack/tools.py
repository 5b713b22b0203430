"""Command-line tools the tests and an SRE's workflow need, built once into the cache.

``pushrelay devstack tool NAME`` prints the path of the cached binary (building it
first if needed) or runs it with the arguments given after ``--``. The binaries
land in ``<cache>/bin/<name>-<version>`` beside the devstack's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pushrelay_devstack.gobuild import Progress, _build, ensure_docker_compose

HELM_VERSION = os.environ.get("PUSHRELAY_DEVSTACK_HELM_VERSION", "v3.22.0")


def ensure_helm(progress: Progress, version: str = HELM_VERSION) -> Path:
    """helm, from the ``helm.sh/helm/v3`` module (what ``go install`` would build)."""
    return _build(
        "helm",
        name="helm",
        version=version,
        module_require="helm.sh/helm/v3",
        package="helm.sh/helm/v3/cmd/helm",
        progress=progress,
        eta="~3-5 min on 2 cores with nothing cached",
        ldflags=[f"-X helm.sh/helm/v3/internal/version.version={version}"],
    )


#: ``docker-compose``: the Compose tests compare their model of compose/ with its
#: own (``config``); ``make tools`` builds it before pytest collects them.
TOOLS: dict[str, Callable[[Progress], Path]] = {
    "helm": ensure_helm, "docker-compose": ensure_docker_compose,
}
