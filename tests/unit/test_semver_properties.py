"""Properties of the semver, constraint and qualifier modules on arbitrary input."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pushrelay.core.constraints import Constraint, InvalidConstraint
from pushrelay.core.qualifiers import compile_subscription
from pushrelay.core.semver import InvalidVersion, Version, parse, parse_strict, parse_tag

# Text that is mostly made of the characters the grammars care about, so that
# many examples get deep into the parsers, plus anything at all (surrogates too).
GRAMMAR = "0123456789.xX*vV-+|,<>=!~^ \t\n\x0babcz_"
interesting = st.text(alphabet=GRAMMAR, max_size=40)
anything = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
texts = st.one_of(interesting, anything)

numbers = st.one_of(st.integers(0, 12), st.integers(0, 2**64 - 1))
identifiers = st.one_of(
    st.integers(0, 2**70).map(str),  # beyond uint64 they compare as text
    st.from_regex(r"[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*", fullmatch=True).filter(
        lambda s: len(s) < 12
    ),
)
dotted = st.lists(identifiers, min_size=1, max_size=4).map(".".join)
metadata = st.lists(
    st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True), min_size=1, max_size=3
).map(".".join)


@st.composite
def versions(draw: st.DrawFn) -> Version:
    major, minor, patch = draw(numbers), draw(numbers), draw(numbers)
    pre = draw(st.one_of(st.just(""), dotted))
    meta = draw(st.one_of(st.just(""), metadata))
    text = str(Version(major, minor, patch, pre, meta))
    return parse(text)


@given(texts)
def test_parsers_raise_only_their_documented_errors(text: str) -> None:
    for fn in (parse, parse_strict):
        try:
            v = fn(text)
        except InvalidVersion as err:
            assert err.version == text
        else:
            assert parse(str(v)) == v
    for strict in (True, False):
        try:
            parse_tag(text, strict=strict)
        except InvalidVersion:
            pass


@given(texts)
def test_constraint_parse_raises_only_invalid_constraint(text: str) -> None:
    try:
        c = Constraint.parse(text)
    except InvalidConstraint as err:
        assert err.constraint == text
        assert isinstance(err, ValueError)
    else:
        assert str(Constraint.parse(str(c))) == str(c)


@given(st.lists(versions(), min_size=1, max_size=8))
def test_precedence_is_a_total_order(vs: list[Version]) -> None:
    ordered = sorted(vs)
    for a, b in pairwise(ordered):
        assert a.compare(b) <= 0
        assert b.compare(a) >= 0
    for a in vs:
        assert a.compare(a) == 0
        for b in vs:
            assert a.compare(b) == -b.compare(a)
            assert (a == b) == (a.compare(b) == 0)
            if a == b:
                assert hash(a) == hash(b)
            for c in vs:
                if a <= b and b <= c:
                    assert a <= c


@given(versions())
def test_parse_of_str_round_trips(v: Version) -> None:
    again = parse(str(v))
    assert again == v
    assert str(again) == str(v)
    assert (again.major, again.minor, again.patch) == (v.major, v.minor, v.patch)
    assert (again.prerelease, again.metadata) == (v.prerelease, v.metadata)
    assert parse_strict(str(v)) == v
    assert parse("v" + str(v)) == v


comparators = st.builds(
    "{}{}{}".format,
    st.sampled_from(["", "=", "!=", ">", "<", ">=", "=>", "<=", "=<", "~", "~>", "^"]),
    st.sampled_from(["", " "]),
    st.from_regex(r"[0-3xX*](\.[0-3xX*]){0,2}(-(alpha|0|1|rc\.1))?", fullmatch=True),
)
constraints = st.lists(
    st.lists(comparators, min_size=1, max_size=3).map(", ".join), min_size=1, max_size=3
).map(" || ".join)


@given(constraints, versions(), st.booleans())
def test_check_agrees_with_validate(text: str, v: Version, include_pre: bool) -> None:
    c = Constraint.parse(text, include_prerelease=include_pre)
    ok, reasons = c.validate(v)
    assert c.check(v) is ok
    assert (reasons == []) is ok
    if (
        not include_pre
        and v.prerelease
        and not any(x.version.prerelease for g in c.groups for x in g)
    ):
        assert not ok  # no prerelease in the constraint: never a prerelease version


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)
subscription_bodies = st.fixed_dictionaries(
    {},
    optional={
        "repoURL": st.one_of(st.just("quay.io/a/b"), st.just("oci://quay.io/a/b"), json_values),
        "imageSelectionStrategy": st.sampled_from(
            ["SemVer", "Lexical", "NewestBuild", "Digest", "", "Other"]
        )
        | json_values,
        "constraint": st.one_of(constraints, texts, json_values),
        "semverConstraint": st.one_of(constraints, texts),
        "strictSemvers": st.booleans() | json_values,
        "allowTagsRegexes": st.lists(texts, max_size=2) | json_values,
        "ignoreTagsRegexes": st.lists(texts, max_size=2) | json_values,
        "allowTags": texts,
        "ignoreTags": st.lists(texts, max_size=2),
    },
)
subscriptions = st.one_of(
    st.builds(lambda k, b: {k: b}, st.sampled_from(["image", "chart", "git"]), subscription_bodies),
    json_values,
)


@settings(max_examples=300)
@given(subscriptions, st.lists(texts, max_size=3))
def test_compile_and_qualify_never_raise(sub: Any, tags: list[str]) -> None:
    compiled = compile_subscription(sub)
    assert compiled.kind in ("image", "chart", "git", "other", "invalid")
    for tag in tags:
        verdict = compiled.qualify(tag)
        assert verdict.reason
        if compiled.error is not None:
            assert not verdict.ok
    ok, reasons = compiled.qualifies_any(tags)
    assert reasons
    assert ok is any(compiled.qualify(t).ok for t in tags if t)


@settings(max_examples=20, deadline=None)
@given(st.integers(1000, 20000), st.sampled_from(["!", "b", "", "a!"]))
def test_pathological_regexes_complete(n: int, tail: str) -> None:
    # Catastrophic for a backtracking engine; RE2 runs in linear time.
    compiled = compile_subscription(
        {
            "image": {
                "repoURL": "quay.io/a/b",
                "imageSelectionStrategy": "Lexical",
                "allowTagsRegexes": ["(a+)+$", "^(a|aa)+$", "(a*)*b"],
            }
        }
    )
    verdict = compiled.qualify("a" * n + tail)
    assert verdict.ok is (tail in ("", "b"))
