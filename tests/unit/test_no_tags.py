"""A push without tags refreshes every subscriber in scope (Kargo's rule), and a
push that matches nothing says why (router fact → ``pushrelay deliveries``)."""

from __future__ import annotations

import io

import pytest

from pushrelay.cli.explain import explain_objects, render
from pushrelay.cli.main import build_parser
from pushrelay.core.deliveries import NO_TAGS, DeliveryFact, fold
from pushrelay.core.matching import WarehouseIndex, miss, push_tags, route
from pushrelay.core.qualifiers import compile_subscription
from tests.unit.test_router_index import URL, Counter, image, wh

ITEMS = [
    wh("a", "strict", image(URL, ["v1"])),
    wh("a", "broken", image(URL, allowTags="^v")),
    wh("a", "git", {"git": {"repoURL": URL}}),
    wh("b", "elsewhere", image(URL, ["v1"])),
    wh("a", "unrelated", image("quay.io/ns/else")),
]


def index() -> WarehouseIndex:
    idx = WarehouseIndex(Counter())
    for item in ITEMS:
        idx.upsert(item)
    return idx


@pytest.mark.parametrize("tags", [[], [""], ["", ""]])
def test_no_tags_refreshes_every_image_or_chart_subscriber_in_scope(tags: list[str]) -> None:
    got = {(m.namespace, m.name, m.tags) for m in route(index(), [URL], tags, None)}
    # broken rules are not checked (nothing to check them against); git never matches
    assert got == {("a", "strict", ()), ("a", "broken", ()), ("b", "elsewhere", ())}
    scoped = {(m.namespace, m.name) for m in route(index(), [URL], tags, "a")}
    assert scoped == {("a", "strict"), ("a", "broken")}


def test_tags_still_filter() -> None:
    assert {m.name for m in route(index(), [URL], ["v2"], None)} == set()
    assert {m.name for m in route(index(), [URL], ["", "v1"], None)} == {"strict", "elsewhere"}


def test_push_tags_drops_empty_and_duplicate_tags() -> None:
    assert push_tags(["", "a", "b", "a", ""]) == ["a", "b"]


def test_no_tags_with_real_qualifiers() -> None:
    idx = WarehouseIndex(compile_subscription)
    idx.upsert(wh("a", "semver", image(URL, constraint=">=2.0.0")))
    idx.upsert(wh("a", "chart", {"chart": {"repoURL": f"oci://{URL}",
                                           "semverConstraint": "^1"}}))
    assert {m.name for m in route(idx, [URL], ["latest"], None)} == set()
    assert {m.name for m in route(idx, [URL], [], None)} == {"semver", "chart"}


def test_miss_counts_subscriptions_in_scope_and_names_the_first_reason() -> None:
    idx = index()
    nothing = miss(idx, [URL], ["v2"], "a")
    assert nothing.subscriptions == 3  # strict, broken, git in namespace a
    assert nothing.reason == "a/strict subscription #0: tag 'v2': v2 not allowed"
    assert miss(idx, ["quay.io/x/y"], ["v1"], None).subscriptions == 0
    assert miss(idx, ["quay.io/x/y"], ["v1"], None).reason is None
    assert miss(idx, [URL], ["v1"], "c").subscriptions == 0  # out of scope


def test_explain_without_tags() -> None:
    result = explain_objects(ITEMS, URL, [], "a", Counter())
    assert {m.name for m in result.matches} == {"strict", "broken"}
    out = io.StringIO()
    render(result, out)
    text = out.getvalue()
    assert text.startswith("push with no tags to quay.io/ns/repo (scope: project a)")
    assert f"WOULD REFRESH 2 Warehouse(s) ({NO_TAGS})" in text
    reports = {r.warehouse: r for r in result.subscriptions}
    assert reports["strict"].outcome == "refresh" and reports["strict"].detail == NO_TAGS
    assert "its rules are not checked" in reports["broken"].detail
    assert reports["elsewhere"].outcome == "out-of-scope"
    assert reports["git"].outcome == "not-applicable"


@pytest.mark.parametrize("argv", [["explain", URL], ["explain", URL, ""]])
def test_explain_cli_accepts_no_tag(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert push_tags(args.tags) == []
    assert build_parser().parse_args(["explain", URL, "v1"]).tags == ["v1"]


# ---- deliveries ---------------------------------------------------------------

def rows(*facts: dict[str, object]) -> str:
    [row] = fold(DeliveryFact.model_validate({"delivery": "d", **f}) for f in facts)
    return row.summary()


ACCEPTED = {"stage": "ingress", "outcome": "accepted", "repository": URL, "project": "a",
            "at": "2026-01-01T00:00:00Z"}
ROUTED = {"stage": "router", "outcome": "matched", "at": "2026-01-01T00:00:01Z"}


def test_no_tags_delivery_says_every_subscriber_refreshed() -> None:
    assert rows(ACCEPTED, {**ROUTED, "warehouses": ["a/x", "a/y"]}) == (
        f"matched 2 warehouses ({NO_TAGS})")
    assert rows(ACCEPTED, {**ROUTED, "warehouses": ["a/x"]},
                {"stage": "refresher", "outcome": "refreshed", "warehouses": ["a/x"],
                 "at": "2026-01-01T00:00:02Z"}) == f"refreshed 1/1 ({NO_TAGS})"


def test_matched_nothing_because_nobody_subscribes() -> None:
    got = rows({**ACCEPTED, "tags": ["v1"]}, {**ROUTED, "subscriptions": 0})
    assert got == "matched 0 warehouses: no Warehouse in scope subscribes to this repository"


def test_matched_nothing_because_no_tag_qualified() -> None:
    got = rows({**ACCEPTED, "tags": ["v2", "v3"]},
               {**ROUTED, "subscriptions": 3, "reason": "a/strict subscription #0: tag 'v2': x"})
    assert got == ("matched 0 warehouses: 3 subscription(s), but no pushed tag qualified "
                   "(first: a/strict subscription #0: tag 'v2': x); "
                   f"see `pushrelay explain {URL} v2 --project a`")


def test_matched_nothing_on_a_test_notification() -> None:
    got = rows({**ACCEPTED, "tags": ["latest", "foo"], "test_notification": True},
               {**ROUTED, "subscriptions": 2, "reason": "whatever"})
    assert got == ("matched 0 warehouses: Quay test notification (its sample tags "
                   "latest, foo qualify for no subscription)")
