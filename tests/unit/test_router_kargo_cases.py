"""Routing with the real tag qualifiers: Kargo's own webhook cases and friends."""

from __future__ import annotations

from typing import Any

import pytest

from pushrelay.cli.explain import explain
from pushrelay.core.matching import WarehouseIndex, event_urls, route
from pushrelay.core.normalize import repo_urls

REPO = "quay.io/mynamespace/repository"


def wh(ns: str, name: str, *subs: dict[str, Any], gen: int = 1) -> dict[str, Any]:
    return {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Warehouse",
            "metadata": {"namespace": ns, "name": name, "generation": gen, "uid": name},
            "spec": {"subscriptions": list(subs)}}


def push(index: WarehouseIndex, tags: list[str], project: str | None = None,
         docker_url: str = REPO) -> set[str]:
    urls = event_urls(repo_urls(docker_url), docker_url)
    return {f"{m.namespace}/{m.name}" for m in route(index, urls, tags, project)}


def build(*objs: dict[str, Any]) -> WarehouseIndex:
    index = WarehouseIndex()
    for obj in objs:
        index.upsert(obj)
    return index


@pytest.mark.parametrize(("constraint", "refreshed"), [("^2.0.0", False), ("^1.0.0", True)])
def test_image_constraint(constraint: str, refreshed: bool) -> None:
    index = build(wh("p", "w", {"image": {"repoURL": REPO, "constraint": constraint}}))
    assert push(index, ["v1.0.0"]) == ({"p/w"} if refreshed else set())


@pytest.mark.parametrize(("constraint", "refreshed"), [("^2.0.0", False), ("^1.0.0", True)])
def test_chart_constraint(constraint: str, refreshed: bool) -> None:
    index = build(wh("p", "w", {"chart": {"repoURL": f"oci://{REPO}", "name": "repository",
                                          "semverConstraint": constraint}}))
    assert push(index, ["v1.0.0"]) == ({"p/w"} if refreshed else set())


def test_older_semver_constraint_field() -> None:
    index = build(wh("p", "w", {"image": {"repoURL": REPO, "semverConstraint": "^1"}}))
    assert push(index, ["1.4.0"]) == {"p/w"}
    assert push(index, ["2.0.0"]) == set()


def test_strict_semvers() -> None:
    index = build(
        wh("p", "strict", {"image": {"repoURL": REPO}}),
        wh("p", "loose", {"image": {"repoURL": REPO, "strictSemvers": False}}),
    )
    assert push(index, ["1.2"]) == {"p/loose"}
    assert push(index, ["v1.2.3"]) == {"p/loose", "p/strict"}
    assert push(index, ["latest"]) == set()


def test_lexical_regexes_and_digest() -> None:
    index = build(
        wh("p", "lex", {"image": {"repoURL": REPO, "imageSelectionStrategy": "Lexical",
                                  "allowTagsRegexes": ["^nightly-"],
                                  "ignoreTagsRegexes": ["-rc$"]}}),
        wh("p", "dig", {"image": {"repoURL": REPO, "imageSelectionStrategy": "Digest",
                                  "constraint": "latest"}}),
    )
    assert push(index, ["nightly-2024"]) == {"p/lex"}
    assert push(index, ["nightly-2024-rc"]) == set()
    assert push(index, ["latest"]) == {"p/dig"}


def test_scope_and_docker_hub_forms() -> None:
    index = build(wh("a", "w", {"image": {"repoURL": "nginx"}}),
                  wh("b", "w", {"image": {"repoURL": "docker.io/library/nginx"}}))
    assert push(index, ["1.0.0"], None, "index.docker.io/library/nginx") == {"a/w", "b/w"}
    assert push(index, ["1.0.0"], "a", "nginx:latest") == {"a/w"}


def test_bad_warehouse_never_affects_others() -> None:
    bad = wh("p", "bad", {"image": {"repoURL": REPO, "imageSelectionStrategy": "Lexical",
                                    "allowTagsRegexes": ["(unclosed"]}},
             {"image": {"repoURL": REPO, "constraint": "^^1"}},
             {"image": {"repoURL": REPO, "allowTags": "^v"}})
    index = build(bad, wh("p", "good", {"image": {"repoURL": REPO}}))
    entry = index.get("p", "bad")
    assert entry is not None and len(entry.problems) == 3
    assert push(index, ["v1.0.0"]) == {"p/good"}
    reports = explain(index, repo_urls(REPO), ["v1.0.0"], None).subscriptions
    why = {r.position: r.detail for r in reports if r.warehouse == "bad"}
    assert "allowTagsRegexes" in why[0] and "^^1" in why[1] and "allowTags" in why[2]


def test_explain_reasons_are_kargo_words() -> None:
    index = build(
        wh("p", "two", {"image": {"repoURL": REPO, "constraint": "^2.0.0"}}),
        wh("p", "strict", {"image": {"repoURL": REPO}}),
        wh("q", "one", {"image": {"repoURL": REPO, "constraint": "^1.0.0"}}),
    )
    result = explain(index, repo_urls(REPO), ["v1.0.0", "1.1"], "p")
    assert result.matches and {m.name for m in result.matches} == {"strict"}
    reasons = {r.warehouse: r for r in result.subscriptions}
    assert "does not satisfy constraint" in reasons["two"].rejected["v1.0.0"]
    assert "strict" in reasons["strict"].rejected["1.1"]
    assert reasons["one"].outcome == "out-of-scope"
