"""The Kubernetes resources pushrelay reads and writes."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "kargo.akuity.io"
VERSION = "v1alpha1"
REFRESH_ANNOTATION = "kargo.akuity.io/refresh"
CLUSTER_CONFIG_NAME = "cluster"


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection (or one object)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        return base


WAREHOUSE = Resource(GROUP, VERSION, "warehouses", "Warehouse", True)
PROJECT_CONFIG = Resource(GROUP, VERSION, "projectconfigs", "ProjectConfig", True)
CLUSTER_CONFIG = Resource(GROUP, VERSION, "clusterconfigs", "ClusterConfig", False)
SECRET = Resource("", "v1", "secrets", "Secret", True)
EVENT = Resource("", "v1", "events", "Event", True)
