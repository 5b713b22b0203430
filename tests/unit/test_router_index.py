"""The pure Warehouse index and router matching, with a stand-in compiler.

These tests pin the index mechanics (generations, scope, deletes, defensive
normalization, containment of broken subscriptions) independently of the tag
qualifiers, whose Kargo semantics are tested in test_router_kargo_cases.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from pushrelay.cli.explain import explain
from pushrelay.core.matching import WarehouseIndex, event_urls, route


@dataclass(frozen=True)
class V:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class Fake:
    """Qualifies a tag when it is in ``allow`` (or anything when allow is None)."""

    kind: str
    repo_url: str
    error: str | None
    allow: frozenset[str] | None

    def qualify(self, tag: str) -> V:
        if self.allow is None or tag in self.allow:
            return V(True)
        return V(False, f"{tag} not allowed")


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, sub: Mapping[str, Any]) -> Fake:
        self.calls += 1
        for kind in ("image", "chart", "git"):
            if kind in sub:
                body = sub[kind]
                if body.get("boom"):
                    raise RuntimeError("compiler bug")
                url = body["repoURL"]  # raw, as pushrelay.core.qualifiers gives it
                allow = body.get("allow")
                error = "deprecated field allowTags" if "allowTags" in body else None
                return Fake(kind, url, error, frozenset(allow) if allow is not None else None)
        raise ValueError("no kind")


def wh(ns: str, name: str, *subs: dict[str, Any], gen: int | None = 1,
       uid: str = "u") -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns, "name": name, "uid": uid}
    if gen is not None:
        meta["generation"] = gen
    return {"metadata": meta, "spec": {"subscriptions": list(subs)}}


def image(url: str, allow: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"repoURL": url, **extra}
    if allow is not None:
        body["allow"] = allow
    return {"image": body}


URL = "quay.io/ns/repo"


@pytest.fixture
def compiler() -> Counter:
    return Counter()


@pytest.fixture
def index(compiler: Counter) -> WarehouseIndex:
    return WarehouseIndex(compiler)


def names(matches: Any) -> set[str]:
    return {f"{m.namespace}/{m.name}" for m in matches}


def test_compiled_once_per_generation(index: WarehouseIndex, compiler: Counter) -> None:
    assert index.upsert(wh("a", "w", image(URL))) is not None
    assert index.upsert(wh("a", "w", image(URL))) is None  # same generation: no work
    assert compiler.calls == 1
    assert index.upsert(wh("a", "w", image(URL), gen=2)) is not None  # re-indexed...
    assert compiler.calls == 1  # ...but an identical subscription is compiled once
    assert index.upsert(wh("a", "w", image(URL, ["v1"]), gen=3)) is not None
    assert compiler.calls == 2
    # A re-created Warehouse (new uid) at generation 1 is compiled again.
    assert index.upsert(wh("a", "w", image(URL), gen=1, uid="other")) is not None


def test_identical_subscriptions_share_compilation(index: WarehouseIndex,
                                                  compiler: Counter) -> None:
    for i in range(10):
        index.upsert(wh(f"ns{i}", "w", image(URL, ["v1"]), image(f"quay.io/ns/r{i}")))
    assert compiler.calls == 11
    assert len(route(index, [URL], ["v1"], None)) == 10


def test_without_generation_the_spec_is_the_fingerprint(index: WarehouseIndex,
                                                        compiler: Counter) -> None:
    index.upsert(wh("a", "w", image(URL), gen=None))
    index.upsert(wh("a", "w", image(URL), gen=None))
    assert compiler.calls == 1
    index.upsert(wh("a", "w", image("quay.io/ns/other"), gen=None))
    assert compiler.calls == 2
    assert not route(index, [URL], ["x"], None)


def test_subscription_urls_are_normalized(index: WarehouseIndex) -> None:
    index.upsert(wh("a", "w", image("Quay.IO/ns/repo:latest"),
                    {"chart": {"repoURL": "OCI://quay.io/ns/repo", "name": "repo"}}))
    index.upsert(wh("a", "hub", image("docker.io/library/nginx")))
    assert route(index, [URL], ["t"], None)[0].positions == (0, 1)
    assert names(route(index, ["nginx"], ["t"], None)) == {"a/hub"}


def test_spec_change_moves_the_warehouse_between_urls(index: WarehouseIndex) -> None:
    index.upsert(wh("a", "w", image(URL)))
    index.upsert(wh("a", "w", image("quay.io/ns/new"), gen=2))
    assert not route(index, [URL], ["t"], None)
    assert names(route(index, ["quay.io/ns/new"], ["t"], None)) == {"a/w"}
    assert list(index.subscribers(URL)) == []


def test_delete(index: WarehouseIndex) -> None:
    index.upsert(wh("a", "w", image(URL)))
    index.upsert(wh("a", "v", image(URL)))
    assert index.remove("a", "w")
    assert not index.remove("a", "w")
    assert names(route(index, [URL], ["t"], None)) == {"a/v"}
    index.remove("a", "v")
    assert len(index) == 0 and index.subscribers(URL) == {}


def test_scope(index: WarehouseIndex) -> None:
    index.upsert(wh("a", "w", image(URL)))
    index.upsert(wh("b", "w", image(URL)))
    assert names(route(index, [URL], ["t"], "a")) == {"a/w"}
    assert names(route(index, [URL], ["t"], "c")) == set()
    assert names(route(index, [URL], ["t"], None)) == {"a/w", "b/w"}


def test_only_qualifying_tags_and_one_request_per_warehouse(index: WarehouseIndex) -> None:
    index.upsert(wh("a", "w", image(URL, ["v1"]), image(URL, ["v2"]),
                    {"chart": {"repoURL": f"oci://{URL}", "name": "repo"}}))
    (match,) = route(index, [URL], ["v0", "v1", "v2"], None)
    assert match.tags == ("v1", "v2", "v0")  # chart subscription: any tag
    assert match.positions == (0, 1, 2)
    assert match.repo_url == URL
    assert route(index, [URL], ["v0"], None)[0].positions == (2,)
    # no tags: nothing to filter on, every subscription refreshes (test_no_tags.py)
    assert route(index, [URL], [], None)[0].positions == (0, 1, 2)


def test_broken_subscription_is_contained() -> None:
    index = WarehouseIndex()  # the real compiler: invalid input compiles to an error
    entry = index.upsert(wh("a", "bad", image(URL, allowTags="^v"),
                            {"image": {"repoURL": URL, "constraint": "not a constraint"}},
                            "not an object", {}))
    assert entry is not None
    assert [s.position for s in entry.problems] == [0, 1, 2, 3]
    index.upsert(wh("a", "good", image(URL)))
    assert names(route(index, [URL], ["v1.0.0"], None)) == {"a/good"}


def test_a_compiler_bug_is_not_an_invalid_subscription(index: WarehouseIndex) -> None:
    """Only input is judged; a bug propagates (the informer reports the failed
    update) instead of being indexed as if the Warehouse were wrong."""
    with pytest.raises(RuntimeError, match="compiler bug"):
        index.upsert(wh("a", "boom", image(URL, boom=True)))
    assert index.get("a", "boom") is None


def test_git_is_indexed_but_never_matched(index: WarehouseIndex) -> None:
    index.upsert(wh("a", "w", {"git": {"repoURL": URL}}))
    assert len(index.subscribers(URL)["a"]) == 1
    assert not route(index, [URL], ["t"], None)
    (report,) = explain(index, [URL], ["t"], None).subscriptions
    assert report.outcome == "not-applicable"


def test_event_urls_renormalize() -> None:
    urls = event_urls(["Quay.io/NS/Repo:tag", "oci://quay.io/ns/chart"], "docker.io/library/nginx")
    assert "quay.io/ns/repo" in urls
    assert "quay.io/ns/chart" in urls
    assert "nginx" in urls
    assert len(urls) == len(set(urls))


def test_explain_reasons(index: WarehouseIndex) -> None:
    index.upsert(wh("a", "yes", image(URL, ["v1"])))
    index.upsert(wh("a", "no", image(URL, ["v2"])))
    index.upsert(wh("b", "elsewhere", image(URL)))
    index.upsert(wh("a", "bad", image(URL, allowTags="x")))
    result = explain(index, [URL], ["v1"], "a")
    assert names(result.matches) == {"a/yes"}
    outcomes = {(r.namespace, r.warehouse): r for r in result.subscriptions}
    assert outcomes[("a", "yes")].outcome == "refresh"
    assert outcomes[("a", "no")].outcome == "no-qualifying-tag"
    assert outcomes[("a", "no")].rejected == {"v1": "v1 not allowed"}
    assert outcomes[("b", "elsewhere")].outcome == "out-of-scope"
    assert "wrong namespace" in outcomes[("b", "elsewhere")].detail
    assert outcomes[("a", "bad")].outcome == "invalid"


def test_many_warehouses_route_quickly(index: WarehouseIndex) -> None:
    for i in range(2000):
        index.upsert(wh(f"ns{i % 50}", f"w{i}", image(f"quay.io/ns/repo{i % 500}")))
    assert len(index) == 2000
    assert len(route(index, ["quay.io/ns/repo7"], ["t"], None)) == 4
    assert len(route(index, ["quay.io/ns/repo7"], ["t"], "ns7")) == 4
    assert len(route(index, ["quay.io/ns/repo7"], ["t"], "ns8")) == 0
