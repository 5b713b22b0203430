"""``pushrelay explain``: rendering and JSON, on synthetic Warehouses."""

from __future__ import annotations

import io

import orjson

from pushrelay.cli.explain import as_json, explain_objects, render
from pushrelay.cli.main import build_parser
from tests.unit.test_router_index import Counter, image, wh

URL = "quay.io/ns/repo"

ITEMS = [
    wh("a", "yes", image(URL, ["v1"])),
    wh("a", "both", image(URL, ["v1"]), image(URL, ["v9"])),
    wh("a", "no", image(URL, ["v2"])),
    wh("b", "other-ns", image(URL)),
    wh("a", "old", image(URL, allowTags="^v")),
    wh("a", "unrelated", image("quay.io/ns/else")),
]


def test_explain_table() -> None:
    result = explain_objects(ITEMS, "Quay.io/ns/repo:latest", ["v1"], "a", Counter())
    out = io.StringIO()
    render(result, out)
    text = out.getvalue()
    assert "scope: project a" in text
    assert "WOULD REFRESH 2 Warehouse(s)" in text
    refresh, _, misses = text.partition("WOULD NOT REFRESH")
    assert "yes" in refresh and "both" in refresh and "other-ns" not in refresh
    assert "wrong namespace" in misses
    assert "v1: v1 not allowed" in misses
    assert "deprecated field allowTags" in misses
    assert "refreshed by another subscription" in misses
    assert "unrelated" not in text


def test_explain_json_cluster_scope() -> None:
    result = explain_objects(ITEMS, URL, ["v1", "v2"], None, Counter())
    doc = orjson.loads(orjson.dumps(as_json(result)))
    assert doc["project"] is None
    assert {(m["namespace"], m["name"]) for m in doc["refresh"]} == {
        ("a", "yes"), ("a", "both"), ("a", "no"), ("b", "other-ns")}
    outcomes = {(s["warehouse"], s["position"]): s["outcome"] for s in doc["subscriptions"]}
    assert outcomes[("old", 0)] == "invalid"
    assert outcomes[("both", 1)] == "no-qualifying-tag"
    assert all(s["outcome"] != "refresh" for s in doc["not_refreshed"])


def test_nothing_subscribed() -> None:
    out = io.StringIO()
    render(explain_objects(ITEMS, "quay.io/x/y", ["v1"], None, Counter()), out)
    assert "WOULD REFRESH no Warehouse" in out.getvalue()
    assert "no Warehouse subscribes to quay.io/x/y" in out.getvalue()


def test_registered_in_cli() -> None:
    args = build_parser().parse_args(["explain", URL, "v1", "v2", "--project", "a", "-o", "json"])
    assert (args.repo, args.tags, args.project, args.output) == (URL, ["v1", "v2"], "a", "json")
