"""What each service's RBAC must allow, exactly: shared by the unit and integration tests."""

from __future__ import annotations

CORE_EVENTS = {("", "events", "create"), ("", "events", "patch"),
               ("events.k8s.io", "events", "create"), ("events.k8s.io", "events", "patch")}
KARGO = "kargo.akuity.io"
# (apiGroup, resource, verb): exactly what each service may do, cluster-wide.
ALLOWED: dict[str, set[tuple[str, str, str]]] = {
    "ingress": {
        (KARGO, "projectconfigs", "list"), (KARGO, "projectconfigs", "watch"),
        (KARGO, "projectconfigs/status", "patch"), (KARGO, "projectconfigs/status", "update"),
        (KARGO, "clusterconfigs", "get"), (KARGO, "clusterconfigs", "list"),
        (KARGO, "clusterconfigs", "watch"),
        (KARGO, "clusterconfigs/status", "patch"), (KARGO, "clusterconfigs/status", "update"),
        ("", "secrets", "list"), ("", "secrets", "watch"),
        *CORE_EVENTS,
    },
    "router": {(KARGO, "warehouses", "list"), (KARGO, "warehouses", "watch"), *CORE_EVENTS},
    "refresher": {(KARGO, "warehouses", "patch"), *CORE_EVENTS},
}
