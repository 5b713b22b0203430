"""List + watch one kind of object into memory, the way client-go informers do.

An :class:`Informer` lists the collection, then watches from the list's
``resourceVersion`` with bookmarks, resuming from the last version it saw when a
watch ends, and lists again when the server answers 410 Gone. Every change is
handed to ``on_change(kind, obj)`` with ``kind`` one of ``ADDED``, ``MODIFIED``,
``DELETED``; a re-list reports only the difference from what was known. No API
call is made per lookup: callers keep their own index or read :attr:`store`.

With ``unchanged`` (e.g. :func:`same_generation`) a change the handler does not
need — the Warehouse a refresh PATCH just annotated — only moves the stored
object's ``resourceVersion``: no transform, no handler call.

With ``coalesce`` set, a busy watch stream is read in bursts: after an event
that came less than ``coalesce`` seconds after the previous one, reading the
connection is paused for ``coalesce`` seconds, so the events that arrive
meanwhile wait in the socket and are read and handled together (one wakeup
instead of one per event). A quiet stream is read at once, as without it.

With ``metadata_only`` the server sends PartialObjectMetadata (``metadata`` and
nothing else: no ``spec``, no Secret ``data``) for the list and the watch alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal

import orjson
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.backoff import Backoff
from pushrelay.infra.kube.client import JSON, METADATA_LIST, METADATA_WATCH, list_objects
from pushrelay.infra.kube.errors import Action, KubeError, translated
from pushrelay.infra.kube.fields import mapping, text
from pushrelay.infra.kube.resources import Resource

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
ChangeKind = Literal["ADDED", "MODIFIED", "DELETED"]
Key = tuple[str, str]  # (namespace or "", name)
OnChange = Callable[[ChangeKind, dict[str, Any]], None]
Transform = Callable[[dict[str, Any]], dict[str, Any]]
#: ``(stored, new)`` → True when ``new`` carries nothing the handler needs.
Unchanged = Callable[[dict[str, Any], dict[str, Any]], bool]


def object_key(obj: dict[str, Any]) -> Key:
    return (text(obj, "metadata", "namespace"), text(obj, "metadata", "name"))


def same_generation(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    """An :data:`Unchanged` for objects whose handler reads only what bumps
    ``metadata.generation`` (the spec): same uid, same integer generation, same
    deletion state. Annotations, labels and status may differ. An object
    without a generation is always a change."""
    old_meta, new_meta = mapping(stored, "metadata"), mapping(new, "metadata")
    generation = new_meta.get("generation")
    return (isinstance(generation, int) and old_meta.get("generation") == generation
            and old_meta.get("uid") == new_meta.get("uid")
            and old_meta.get("deletionTimestamp") == new_meta.get("deletionTimestamp"))


class Informer:
    def __init__(
        self, api: ApiClient, resource: Resource, on_change: OnChange, *,
        namespace: str | None = None, watch_seconds: int = 240,
        max_backoff: float = 30.0, label_selector: str | None = None,
        transform: Transform | None = None, metadata_only: bool = False,
        unchanged: Unchanged | None = None, coalesce: float = 0.0,
    ) -> None:
        """``transform`` (like client-go's SetTransform) trims each object before it
        is stored and handed on, e.g. to keep only one key of a Secret's data
        (it must keep what ``unchanged`` reads). ``unchanged(stored, new)`` True:
        a modification is not handed on (the stored object only takes the new
        ``resourceVersion``); a re-list compares the same way. ``coalesce``: see
        the module docstring (0: every event is read as it comes)."""
        self._api = api
        self.resource = resource
        self._on_change = on_change
        self._namespace = namespace
        self._watch_seconds = watch_seconds
        self._backoff = Backoff(base=0.4, max_delay=max_backoff)
        self._label_selector = label_selector
        self._transform = transform
        self._unchanged = unchanged
        self._coalesce = coalesce
        self._list_accept = METADATA_LIST if metadata_only else JSON
        self._watch_accept = METADATA_WATCH if metadata_only else JSON
        self.store: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer:{self.resource.plural}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _emit(self, kind: ChangeKind, obj: dict[str, Any]) -> None:
        try:
            self._on_change(kind, obj)
        except Exception:  # noqa: BLE001 - one bad handler call must not stop the watch
            log.exception("handler failed for %s %s", self.resource.kind, object_key(obj))

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._relist()
                failures = 0
                while True:
                    version = await self._watch(version)
            except KubeError as error:
                self.last_error = error.reason
                if error.action is Action.RELIST:
                    log.info("%s watch expired; listing again", self.resource.plural)
                    continue
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning(
                    "%s informer failed (%s); retrying in %.1fs",
                    self.resource.plural, error.reason, delay,
                )
                await asyncio.sleep(delay)

    async def _relist(self) -> str:
        query: dict[str, Any] = {}
        if self._label_selector:
            query["labelSelector"] = self._label_selector
        fresh: dict[Key, dict[str, Any]] = {}
        token: str | None = None
        while True:  # in pages, so a large collection never sits in memory whole
            page_query = {**query, "limit": LIST_PAGE_SIZE}
            if token:
                page_query["continue"] = token
            listing = await list_objects(self._api, self.resource, self._namespace,
                                         accept=self._list_accept, **page_query)
            for item in listing.get("items") or []:
                if not isinstance(item, dict):
                    continue
                item.setdefault("apiVersion", self.resource.api_version)
                item.setdefault("kind", self.resource.kind)
                if self._transform is not None:
                    item = self._transform(item)
                fresh[object_key(item)] = item
            token = text(listing, "metadata", "continue")
            if not token:
                break
        for key in list(self.store):
            if key not in fresh:
                self._emit("DELETED", self.store.pop(key))
        for key, obj in fresh.items():
            old = self.store.get(key)
            if old is not None and self._skip(old, obj):
                continue
            self.store[key] = obj
            if old is None:
                self._emit("ADDED", obj)
            elif _version(old) != _version(obj):
                self._emit("MODIFIED", obj)
        self.synced.set()
        self.last_error = None
        return text(listing, "metadata", "resourceVersion")

    async def _watch(self, version: str) -> str:
        query: list[tuple[str, Any]] = [
            ("watch", "true"), ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", self._watch_seconds),
        ]
        if version:
            query.append(("resourceVersion", version))
        if self._label_selector:
            query.append(("labelSelector", self._label_selector))
        with translated():
            response = await self._api.call_api(
                self.resource.path(self._namespace), "GET", query_params=query,
                header_params={"Accept": self._watch_accept}, auth_settings=["BearerToken"],
                _preload_content=False, _request_timeout=self._watch_seconds + 30,
            )
        try:
            if response.status != 200:
                raise KubeError(
                    Action.RELIST if response.status == 410 else Action.RETRY,
                    f"watch answered {response.status}", response.status,
                )
            buffer = b""
            last = 0.0  # loop time of the previous chunk
            with translated():  # the stream breaking off mid-way
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            version = self._apply(_event(line), version)
                    if self._coalesce:
                        last = await self._let_events_pile_up(response, last)
            return version
        finally:
            response.release()

    async def _let_events_pile_up(self, response: Any, last: float) -> float:
        """After a chunk that followed the previous one within ``coalesce``
        seconds, pause reading the connection for ``coalesce`` seconds; returns
        the loop time reading went on from (what ``last`` is for the next chunk).

        Every refresh PATCH comes back as a watch event, so under load the
        router's watch carries one event per push, each read on its own (a
        wakeup, a TLS record, a chunk: ~100 µs of CPU on a small VM before any
        Python runs). Pausing goes through aiohttp's public flow-control calls
        on the response's protocol (the ones its own stream reader uses), which
        also stop and restart the read timeout; without a connection it does
        nothing. Changes reach the handler at most ``coalesce`` seconds later.
        """
        now = asyncio.get_running_loop().time()
        connection = response.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is None or now - last >= self._coalesce:
            return now
        protocol.pause_reading()
        try:
            await asyncio.sleep(self._coalesce)
        finally:
            if response.connection is not None:
                protocol.resume_reading()
        return asyncio.get_running_loop().time()

    def _apply(self, event: dict[str, Any], version: str) -> str:
        kind = event.get("type")
        obj = event.get("object")
        if kind == "ERROR":
            code = mapping(obj).get("code")
            raise KubeError(
                Action.RELIST if code == 410 else Action.RETRY,
                f"watch error {code}: {text(obj, 'message')}",
                code if isinstance(code, int) else None,
            )
        if not isinstance(obj, dict):
            return version
        new_version = _version(obj) or version
        if kind == "BOOKMARK":
            return new_version
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return new_version
        key = object_key(obj)
        if kind == "DELETED":
            self.store.pop(key, None)
            self._emit("DELETED", self._transform(obj) if self._transform else obj)
            return new_version
        old = self.store.get(key)
        if old is not None and self._skip(old, obj):
            return new_version
        if self._transform is not None:
            obj = self._transform(obj)
        self.store[key] = obj
        self._emit("ADDED" if old is None else "MODIFIED", obj)
        return new_version

    def _skip(self, stored: dict[str, Any], new: dict[str, Any]) -> bool:
        """True for a change ``unchanged`` says the handler does not need; the
        stored object then takes the new ``resourceVersion`` (so a re-list
        compares against what was last seen)."""
        if self._unchanged is None or not self._unchanged(stored, new):
            return False
        meta = stored.get("metadata")
        if isinstance(meta, dict):
            meta["resourceVersion"] = _version(new)
        return True


def _event(line: bytes) -> dict[str, Any]:
    """One watch event; a line that is not a JSON object means the stream broke."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise KubeError(Action.RETRY, f"malformed watch event: {exc}") from exc
    if not isinstance(event, dict):
        raise KubeError(Action.RETRY, "malformed watch event: not an object")
    return event


def _version(obj: dict[str, Any]) -> str:
    return text(obj, "metadata", "resourceVersion")
