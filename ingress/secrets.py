"""The data of the Secrets receivers reference, and of no other Secret.

Every Secret in the cluster is known by identity and ``resourceVersion`` only,
through a metadata-only informer (PartialObjectMetadata list + watch: a few
hundred bytes per Secret on the wire, whatever its data, and ~0.5 KiB held).
The data is read only for the Secrets :meth:`ReferencedSecrets.sync` is told
are wanted: one namespaced LIST with ``fieldSelector=metadata.name=<name>``
each (the same ``list`` verb the informer needs, so RBAC grants nothing more),
when a wanted Secret is first seen or its ``resourceVersion`` differs from the
one its held copy was read at. Only the ``secret`` key of that data is kept.

Changes to a wanted Secret (update, delete, re-create, or a difference found by
a re-list after ``410 Gone``) call ``on_change``; the owner then calls
:meth:`sync` again, which reads what is stale and forgets what is gone or no
longer wanted. Changes to any other Secret cost one small watch event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes_asyncio.client import ApiClient

from pushrelay.core.receivers import SECRET_KEY
from pushrelay.infra.kube.client import list_objects
from pushrelay.infra.kube.errors import KubeError
from pushrelay.infra.kube.fields import items, mapping, text
from pushrelay.infra.kube.informer import ChangeKind, Informer, Key, object_key
from pushrelay.infra.kube.resources import SECRET

log = logging.getLogger(__name__)

FETCH_CONCURRENCY = 8
_IDENTITY = ("namespace", "name", "uid", "resourceVersion")


def identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Only what tells one version of an object from another: its identity."""
    meta = mapping(obj, "metadata")
    return {"metadata": {k: meta[k] for k in _IDENTITY if k in meta}}


def trim_secret(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only what receivers need of a Secret: identity and the ``secret`` key."""
    kept = identity(obj)
    data = mapping(obj, "data")
    if SECRET_KEY in data:
        kept["data"] = {SECRET_KEY: data[SECRET_KEY]}
    return kept


def version_of(obj: Mapping[str, Any]) -> str:
    return text(obj, "metadata", "resourceVersion")


def plan(wanted: Iterable[Key], versions: Mapping[Key, str],
         read_at: Mapping[Key, str]) -> tuple[set[Key], set[Key]]:
    """(keys to read, keys to forget).

    ``versions``: the resourceVersion of every existing Secret (metadata);
    ``read_at``: for each held key, the version the metadata showed when it was
    read. A wanted Secret is read when it exists and was not read at its current
    version; a held one is forgotten when it is no longer wanted or no longer exists.
    """
    wanted = set(wanted)
    to_read = {k for k in wanted if k in versions and read_at.get(k) != versions[k]}
    to_forget = {k for k in read_at if k not in wanted or k not in versions}
    return to_read, to_forget


class ReferencedSecrets:
    """Secrets by (namespace, name): the data of wanted ones, the identity of all.

    The owner starts and stops :attr:`informer` (and waits for it to be synced)
    with its other informers.
    """

    def __init__(self, api: ApiClient, on_change: Callable[[], None]) -> None:
        self._api = api
        self._on_change = on_change
        self.informer = Informer(api, SECRET, self._seen, transform=identity,
                                 metadata_only=True)
        self._wanted: set[Key] = set()
        self._data: dict[Key, dict[str, Any] | None] = {}  # None: gone when read
        self._read_at: dict[Key, str] = {}
        self._limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The trimmed Secret as last read, or None (absent, unreadable or not wanted)."""
        return self._data.get((namespace, name))

    def _seen(self, kind: ChangeKind, obj: dict[str, Any]) -> None:
        if object_key(obj) in self._wanted:
            self._on_change()

    async def sync(self, wanted: Iterable[Key]) -> bool:
        """Hold the data of exactly the ``wanted`` Secrets that exist, as of now.

        Returns False when a read failed: the previous copy (if any) is kept and
        the read is tried again at the next call.
        """
        self._wanted = set(wanted)
        store = self.informer.store
        versions = {k: version_of(store[k]) for k in self._wanted | self._read_at.keys()
                    if k in store}  # the keys plan() looks at, not every Secret
        to_read, to_forget = plan(self._wanted, versions, self._read_at)
        for key in to_forget:
            self._data.pop(key, None)
            self._read_at.pop(key, None)
        results = await asyncio.gather(*(self._read(k, versions[k]) for k in to_read))
        return all(results)

    async def _read(self, key: Key, version: str) -> bool:
        namespace, name = key
        try:
            async with self._limit:
                listing = await list_objects(self._api, SECRET, namespace,
                                             fieldSelector=f"metadata.name={name}")
        except KubeError as error:  # retried at the next sync; anything else is a bug
            log.warning("could not read a referenced Secret", extra={
                "namespace": namespace, "secret": name, "reason": error.reason})
            return False
        found = items(listing, "items")
        self._data[key] = trim_secret(found[0]) if found else None
        self._read_at[key] = version
        return True
