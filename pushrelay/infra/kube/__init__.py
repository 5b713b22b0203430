"""Kubernetes access: one client factory, errors translated once, informers."""

from pushrelay.infra.kube.errors import (
    Action,
    KubeError,
    translate,
    translated,
)
from pushrelay.infra.kube.resources import (
    CLUSTER_CONFIG,
    GROUP,
    PROJECT_CONFIG,
    REFRESH_ANNOTATION,
    SECRET,
    VERSION,
    WAREHOUSE,
    Resource,
)

__all__ = [
    "CLUSTER_CONFIG",
    "GROUP",
    "PROJECT_CONFIG",
    "REFRESH_ANNOTATION",
    "SECRET",
    "VERSION",
    "WAREHOUSE",
    "Action",
    "KubeError",
    "Resource",
    "translate",
    "translated",
]
