"""Reading fields of API objects (``null`` or a wrong type is absent).

The helpers are pure, so they live in :mod:`pushrelay.core.fields` (the domain
reads ProjectConfigs and Warehouses with them too); this is the name the
Kubernetes adapters and the devstack import.
"""

from __future__ import annotations

from pushrelay.core.fields import items, mapping, text

__all__ = ["items", "mapping", "text"]
