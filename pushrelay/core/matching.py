"""Which Warehouses a push refreshes (docs/contracts.md, "Matching"): a pure index.

With :mod:`pushrelay.core.qualifiers` (what one subscription accepts) this is
the matching family of the core. The router keeps a :class:`WarehouseIndex` up
to date from an informer, and ``pushrelay explain`` builds one from a single
LIST; both then ask :func:`route`, so the CLI's answer is the router's answer.
Nothing here does I/O.

* Subscriptions are compiled (constraints parsed, regexes built) once per
  Warehouse *generation*: an unchanged Warehouse seen again (re-list, status
  update) costs a dictionary lookup. :meth:`WarehouseIndex.upsert` returns the
  freshly compiled Warehouse so the caller can report its problems once.
* A subscription that does not compile (bad regex, bad constraint, deprecated
  field) is indexed with its error and never matches; it cannot affect another
  subscription or Warehouse.
* The index is keyed by normalized repository URL, then by namespace, so a
  project-scoped event only looks at its own namespace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pushrelay.core.fields import items, mapping, text
from pushrelay.core.normalize import normalize_chart, normalize_image, repo_urls
from pushrelay.core.qualifiers import CompiledSubscription, compile_subscription

#: Kinds of subscription a registry push can refresh (``git`` is indexed only).
PUSHABLE_KINDS = frozenset({"image", "chart"})
#: Distinct compiled subscriptions kept for sharing (oldest dropped first).
COMPILE_CACHE_SIZE = 16384


#: Compiles one raw subscription (tests inject counting fakes).
Compiler = Callable[[Mapping[str, Any]], CompiledSubscription]


@dataclass(frozen=True, slots=True)
class Subscription:
    namespace: str
    warehouse: str
    position: int  # index in spec.subscriptions
    compiled: CompiledSubscription
    repo_url: str  # normalized, as indexed

    @property
    def kind(self) -> str:
        return self.compiled.kind

    @property
    def error(self) -> str | None:
        return self.compiled.error


@dataclass(frozen=True, slots=True)
class Warehouse:
    namespace: str
    name: str
    uid: str
    generation: int | None
    subscriptions: tuple[Subscription, ...]

    @property
    def problems(self) -> list[Subscription]:
        return [s for s in self.subscriptions if s.error]


def _meta(obj: Mapping[str, Any]) -> tuple[str, str, str, Any]:
    meta = mapping(obj, "metadata")
    return (text(meta, "namespace"), text(meta, "name"), text(meta, "uid"),
            meta.get("generation"))


def _digest(value: Any) -> bytes:
    """A compact fingerprint of a JSON value (orjson's own buffer is ~4 KiB)."""
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(raw, digest_size=16).digest()


def normalize_url(kind: str, url: str) -> str:
    """A subscription's repoURL as the index keys it (Kargo's normalization)."""
    if not url:
        return ""
    return normalize_chart(url) if kind == "chart" else normalize_image(url)


class WarehouseIndex:
    """Warehouses by normalized subscription URL → namespace → subscriptions."""

    def __init__(self, compiler: Compiler | None = None) -> None:
        self._compile = compiler or compile_subscription
        self._warehouses: dict[tuple[str, str], Warehouse] = {}
        self._fingerprints: dict[tuple[str, str], tuple[str, object]] = {}
        self._by_url: dict[str, dict[str, dict[tuple[str, int], Subscription]]] = {}
        self._cache: dict[bytes, CompiledSubscription] = {}

    def __len__(self) -> int:
        return len(self._warehouses)

    def __iter__(self) -> Any:
        return iter(list(self._warehouses.values()))

    def get(self, namespace: str, name: str) -> Warehouse | None:
        return self._warehouses.get((namespace, name))

    def subscribers(self, url: str) -> Mapping[str, Mapping[tuple[str, int], Subscription]]:
        """Every subscription on ``url`` (normalized), by namespace."""
        return self._by_url.get(url, {})

    def upsert(self, obj: Mapping[str, Any]) -> Warehouse | None:
        """Index a Warehouse object; the new entry when it was (re)compiled, else None."""
        namespace, name, uid, generation = _meta(obj)
        if not name:
            return None
        key = (namespace, name)
        spec = obj.get("spec") or {}
        marker: object = generation
        if not isinstance(generation, int):
            marker = _digest(spec)
        if self._fingerprints.get(key) == (uid, marker):
            return None
        subs = items(spec, "subscriptions")
        entry = Warehouse(
            namespace, name, uid, generation if isinstance(generation, int) else None,
            tuple(self._subscription(namespace, name, i, s) for i, s in enumerate(subs)),
        )
        self._drop(key)
        self._warehouses[key] = entry
        self._fingerprints[key] = (uid, marker)
        for sub in entry.subscriptions:
            if sub.repo_url:
                bucket = self._by_url.setdefault(sub.repo_url, {}).setdefault(namespace, {})
                bucket[(name, sub.position)] = sub
        return entry

    def remove(self, namespace: str, name: str) -> bool:
        return self._drop((namespace, name)) is not None

    def _drop(self, key: tuple[str, str]) -> Warehouse | None:
        old = self._warehouses.pop(key, None)
        self._fingerprints.pop(key, None)
        if old is None:
            return None
        for sub in old.subscriptions:
            by_ns = self._by_url.get(sub.repo_url)
            if by_ns is None:
                continue
            bucket = by_ns.get(old.namespace)
            if bucket is not None:
                bucket.pop((old.name, sub.position), None)
                if not bucket:
                    del by_ns[old.namespace]
            if not by_ns:
                del self._by_url[sub.repo_url]
        return old

    def _subscription(self, namespace: str, name: str, position: int,
                      sub: Any) -> Subscription:
        compiled = self._compile_one(sub)
        return Subscription(namespace, name, position, compiled,
                            normalize_url(compiled.kind, compiled.repo_url))

    def _compile_one(self, sub: Any) -> CompiledSubscription:
        """Compile, sharing the result between identical subscriptions (the same
        repository and rules in dev/staging/prod Warehouses): compiled
        subscriptions are immutable, and parsing constraints is the slow part.

        Invalid subscriptions compile to an error (the compiler never raises for
        input); an exception here is a bug and propagates."""
        key = _digest(sub)
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._compile(sub)
            if len(self._cache) >= COMPILE_CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = compiled
        return compiled


def event_urls(urls: Iterable[str], repository: str | None = None) -> list[str]:
    """The normalized forms to look up for an event, re-normalized defensively:
    producers other than our ingress publish directly and may not normalize."""
    forms: list[str] = []
    for url in urls:
        forms += [url, normalize_image(url), normalize_chart(url)]
    if repository:
        forms += repo_urls(repository)
    return list(dict.fromkeys(u for u in forms if u))


@dataclass(frozen=True, slots=True)
class Match:
    """A Warehouse to refresh: the first matching URL and the qualifying tags."""

    namespace: str
    name: str
    repo_url: str
    tags: tuple[str, ...]
    positions: tuple[int, ...]


def qualifying(sub: Subscription, tags: Iterable[str]) -> list[str]:
    if sub.error or sub.kind not in PUSHABLE_KINDS:
        return []
    return [t for t in tags if sub.compiled.qualify(t).ok]


def push_tags(tags: Iterable[str]) -> list[str]:
    """The tags a push carries: empty strings dropped, duplicates removed, in order."""
    return [t for t in dict.fromkeys(tags) if t]


def _in_scope(index: WarehouseIndex, url: str, project: str | None) -> Iterable[Subscription]:
    by_ns = index.subscribers(url)
    if project is None:
        for bucket in by_ns.values():
            yield from bucket.values()
    else:
        yield from by_ns.get(project, {}).values()


def route(index: WarehouseIndex, urls: Iterable[str], tags: Iterable[str],
          project: str | None) -> list[Match]:
    """Warehouses to refresh for a push of ``tags`` to any of ``urls`` (normalized).

    A push without tags (none, or only empty strings) has nothing to filter on:
    every image or chart subscriber in scope is refreshed, whatever its rules
    (Kargo's ``refreshWarehouses`` skips its qualifier check then, broken
    selectors included). Git subscriptions never match a registry push.
    """
    tag_list = push_tags(tags)
    found: dict[tuple[str, str], tuple[str, dict[str, None], list[int]]] = {}
    verdicts: dict[int, list[str]] = {}  # identical subscriptions share a compiled object
    for url in urls:
        for sub in _in_scope(index, url, project):
            ok: list[str] | None
            if not tag_list:
                if sub.kind not in PUSHABLE_KINDS:
                    continue
                ok = []
            else:
                ok = verdicts.get(id(sub.compiled))
                if ok is None:
                    ok = verdicts[id(sub.compiled)] = qualifying(sub, tag_list)
                if not ok:
                    continue
            key = (sub.namespace, sub.warehouse)
            if key not in found:
                found[key] = (url, {}, [])
            found[key][1].update(dict.fromkeys(ok))
            found[key][2].append(sub.position)
    return [Match(ns, name, url, tuple(t), tuple(sorted(p)))
            for (ns, name), (url, t, p) in found.items()]


@dataclass(frozen=True, slots=True)
class Miss:
    """Why a push refreshes nothing: the subscriptions on its repository in scope,
    and the first reason one of them gave (None when there are none)."""

    subscriptions: int
    reason: str | None


def why_not(sub: Subscription, tags: Iterable[str]) -> str:
    """The first reason ``sub`` does not qualify for a push of ``tags``."""
    where = f"{sub.namespace}/{sub.warehouse} subscription #{sub.position}"
    if sub.error:
        return f"{where}: {sub.error}"
    if sub.kind not in PUSHABLE_KINDS:
        return f"{where}: {sub.kind} subscriptions are not refreshed by a registry push"
    for tag in tags:
        verdict = sub.compiled.qualify(tag)
        if not verdict.ok:
            return f"{where}: tag {tag!r}: {verdict.reason or 'not qualified'}"
    return f"{where}: no pushed tag qualifies"


def miss(index: WarehouseIndex, urls: Iterable[str], tags: Iterable[str],
         project: str | None) -> Miss:
    """For a push :func:`route` matched to nothing: how many subscriptions in scope
    were on its repository, and why the first of them did not qualify."""
    tag_list = push_tags(tags)
    seen: set[tuple[str, str, int]] = set()
    first: Subscription | None = None
    for url in dict.fromkeys(urls):
        for sub in _in_scope(index, url, project):
            seen.add((sub.namespace, sub.warehouse, sub.position))
            first = first or sub
    return Miss(len(seen), why_not(first, tag_list) if first is not None else None)
