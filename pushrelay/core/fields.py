"""Reading fields of API objects: ``null`` is absent, a wrong type is absent.

The API server returns ``null`` for fields that were written as ``null`` and
for some it fills in late (a just-created CRD's ``status.conditions``);
custom resources with open schemas may hold any type anywhere. Everything
that reads an API object goes through these two functions instead of chained
``.get(..., {})``, which only covers a *missing* key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_EMPTY: Mapping[str, Any] = {}


def mapping(obj: Any, *path: str) -> Mapping[str, Any]:
    """The object at ``path`` under ``obj``; ``{}`` if any step is missing, null or
    not an object."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj if isinstance(obj, Mapping) else _EMPTY


def items(obj: Any, *path: str) -> list[Any]:
    """The list at ``path`` under ``obj``; ``[]`` if missing, null or not a list."""
    *parents, last = path
    value = mapping(obj, *parents).get(last)
    return value if isinstance(value, list) else []


def text(obj: Any, *path: str) -> str:
    """The string at ``path`` under ``obj``; ``""`` if missing, null or not a string.
    Numbers (a ``generation`` read as text) are written out."""
    *parents, last = path
    value = mapping(obj, *parents).get(last)
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else ""
