"""Tag qualifiers: Kargo's MatchesTag / MatchesVersion, one subscription at a time."""

from __future__ import annotations

from typing import Any

import pytest

from pushrelay.core.qualifiers import CompiledSubscription, Verdict, compile_subscription

QUAY = "quay.io/mynamespace/repository"


def image(**fields: Any) -> dict[str, Any]:
    return {"image": {"repoURL": QUAY, **fields}}


def chart(**fields: Any) -> dict[str, Any]:
    return {"chart": {"repoURL": f"oci://{QUAY}", **fields}}


def _compiled(sub: dict[str, Any]) -> CompiledSubscription:
    compiled = compile_subscription(sub)
    assert compiled.error is None, compiled.error
    return compiled


# (subscription, tag, qualifies)
QUALIFY_CASES: list[tuple[str, dict[str, Any], str, bool]] = [
    # Kargo's own webhook cases
    ("kargo: ^2.0.0 rejects v1.0.0", image(constraint="^2.0.0"), "v1.0.0", False),
    ("kargo: ^1.0.0 accepts v1.0.0", image(constraint="^1.0.0"), "v1.0.0", True),
    ("kargo chart: ^2.0.0 rejects 1.0.0", chart(semverConstraint="^2.0.0"), "1.0.0", False),
    ("kargo chart: ^1.0.0 accepts 1.0.0", chart(semverConstraint="^1.0.0"), "1.0.0", True),
    ("kargo chart: ^1.0.0 accepts v1.0.0", chart(semverConstraint="^1.0.0"), "v1.0.0", True),
    # SemVer strategy (the default), strictSemvers default true
    ("semver: any version without constraint", image(), "1.2.3", True),
    ("semver: explicit strategy", image(imageSelectionStrategy="SemVer"), "1.2.3", True),
    ("semver: empty strategy is SemVer", image(imageSelectionStrategy=""), "1.2.3", True),
    ("semver: leading v allowed when strict", image(), "v1.2.3", True),
    ("semver: prerelease without constraint", image(), "1.2.3-rc.1", True),
    ("semver: strict rejects 1.2", image(), "1.2", False),
    ("semver: strict rejects a short sha", image(), "1234567", False),
    ("semver: strict rejects leading zeros", image(), "01.2.3", False),
    ("semver: strict null is true", image(strictSemvers=None), "1.2", False),
    ("semver: non-strict accepts 1.2", image(strictSemvers=False), "1.2", True),
    ("semver: non-strict accepts v1", image(strictSemvers=False), "v1", True),
    ("semver: non-strict accepts a numeric sha", image(strictSemvers=False), "1234567", True),
    ("semver: non-strict still rejects text", image(strictSemvers=False), "latest", False),
    ("semver: not a version", image(), "latest", False),
    ("semver: double v", image(), "vv1.2.3", False),
    ("semver: uppercase V", image(), "V1.2.3", False),
    ("semver: constraint excludes prerelease", image(constraint=">=1.0.0"), "1.2.0-rc.1", False),
    ("semver: prerelease constraint", image(constraint=">=1.0.0-0"), "1.2.0-rc.1", True),
    ("semver: OR constraint", image(constraint="^1.0 || ^3.0"), "v3.4.5", True),
    ("semver: hyphen range", image(constraint="1.2 - 1.4.5"), "1.4.6", False),
    ("semver: wildcard", image(constraint="2.x"), "2.9.0", True),
    ("semver: older semverConstraint", image(semverConstraint="^2.0.0"), "1.0.0", False),
    (
        "semver: constraint wins over semverConstraint",
        image(constraint="^1.0.0", semverConstraint="^2.0.0"),
        "1.0.0",
        True,
    ),
    # SemVer applies the regex filters too (Kargo's semverSelector embeds tagBasedSelector)
    ("semver: ignore regex", image(ignoreTagsRegexes=["-rc"]), "1.2.3-rc.1", False),
    ("semver: allow regex", image(allowTagsRegexes=["^v"]), "1.2.3", False),
    ("semver: allow regex passes", image(allowTagsRegexes=["^v"]), "v1.2.3", True),
    # Lexical / NewestBuild
    ("lexical: no filters", image(imageSelectionStrategy="Lexical"), "anything", True),
    (
        "lexical: ignore wins over allow",
        image(
            imageSelectionStrategy="Lexical",
            allowTagsRegexes=["^nightly"],
            ignoreTagsRegexes=["-broken$"],
        ),
        "nightly-2024-broken",
        False,
    ),
    (
        "lexical: allowed",
        image(imageSelectionStrategy="Lexical", allowTagsRegexes=["^nightly"]),
        "nightly-2024",
        True,
    ),
    (
        "lexical: one of several allow regexes",
        image(imageSelectionStrategy="Lexical", allowTagsRegexes=["^a", "^b"]),
        "beta",
        True,
    ),
    (
        "lexical: allow search is unanchored",
        image(imageSelectionStrategy="Lexical", allowTagsRegexes=["ight"]),
        "nightly",
        True,
    ),
    (
        "lexical: not allowed",
        image(imageSelectionStrategy="Lexical", allowTagsRegexes=["^nightly"]),
        "release-1",
        False,
    ),
    (
        "newestbuild: ignored",
        image(imageSelectionStrategy="NewestBuild", ignoreTagsRegexes=["^latest$"]),
        "latest",
        False,
    ),
    (
        "newestbuild: constraint is irrelevant",
        image(imageSelectionStrategy="NewestBuild", constraint="^9"),
        "sha-abc",
        True,
    ),
    (
        "newestbuild: strictSemvers is irrelevant",
        image(imageSelectionStrategy="NewestBuild"),
        "1.2",
        True,
    ),
    (
        "lexical: RE2 classes",
        image(imageSelectionStrategy="Lexical", allowTagsRegexes=[r"^\p{Greek}+$"]),
        "αβγ",
        True,
    ),
    (
        "lexical: case-insensitive flag",
        image(imageSelectionStrategy="Lexical", allowTagsRegexes=["(?i)^RELEASE"]),
        "release-2",
        True,
    ),
    # Digest
    (
        "digest: the watched tag",
        image(imageSelectionStrategy="Digest", constraint="stable"),
        "stable",
        True,
    ),
    (
        "digest: another tag",
        image(imageSelectionStrategy="Digest", constraint="stable"),
        "latest",
        False,
    ),
    (
        "digest: exact, not a pattern",
        image(imageSelectionStrategy="Digest", constraint="stable"),
        "stable-1",
        False,
    ),
    (
        "digest: ignores deprecated fields",
        image(imageSelectionStrategy="Digest", constraint="stable", ignoreTags=["x"]),
        "stable",
        True,
    ),
    # charts: non-strict NewVersion, no "_" to "+" substitution
    ("chart: any version", chart(), "0.1.0", True),
    ("chart: non-strict", chart(), "1.2", True),
    ("chart: not a version", chart(), "latest", False),
    ("chart: underscore metadata is not a version", chart(), "1.0.0_build.1", False),
    ("chart: prerelease excluded by constraint", chart(semverConstraint="^1"), "1.1.0-rc.1", False),
    (
        "chart: https repository",
        {"chart": {"repoURL": "https://charts.example.com", "name": "x"}},
        "1.0.0",
        True,
    ),
    # never
    ("git: never", {"git": {"repoURL": "https://github.com/example/repo"}}, "v1.0.0", False),
    ("generic subscription type: never", {"artifact": {"config": {}}}, "v1.0.0", False),
]


@pytest.mark.parametrize(
    ("sub", "tag", "expected"),
    [pytest.param(s, t, e, id=name) for name, s, t, e in QUALIFY_CASES],
)
def test_qualify(sub: dict[str, Any], tag: str, expected: bool) -> None:
    compiled = _compiled(sub)
    verdict = compiled.qualify(tag)
    assert isinstance(verdict, Verdict)
    assert verdict.ok is expected, verdict.reason
    assert verdict.reason


@pytest.mark.parametrize(
    ("sub", "tag", "reason"),
    [
        pytest.param(
            image(constraint="^2.0.0"),
            "v1.0.0",
            'tag "v1.0.0" does not satisfy constraint "^2.0.0": "1.0.0" is less than "2.0.0"',
            id="constraint",
        ),
        pytest.param(
            image(constraint="^2.0.0"),
            "v2.0.1",
            'tag "v2.0.1" satisfies constraint "^2.0.0"',
            id="constraint ok",
        ),
        pytest.param(
            image(semverConstraint="^2.0.0"),
            "1.0.0",
            'tag "1.0.0" does not satisfy semverConstraint "^2.0.0": "1.0.0" is less than "2.0.0"',
            id="older semverConstraint",
        ),
        pytest.param(
            image(),
            "foo",
            'tag "foo" is not a semantic version',
            id="not semver",
        ),
        pytest.param(
            image(),
            "1.0",
            'tag "1.0" is not a strict semantic version (strictSemvers)',
            id="not strict",
        ),
        pytest.param(
            image(imageSelectionStrategy="Lexical", ignoreTagsRegexes=["^y$", "^x$"]),
            "x",
            'tag "x" excluded by ignoreTagsRegexes "^x$"',
            id="ignored",
        ),
        pytest.param(
            image(imageSelectionStrategy="Lexical", allowTagsRegexes=["^a", "^b"]),
            "c",
            'tag "c" matches none of allowTagsRegexes ["^a", "^b"]',
            id="not allowed",
        ),
        pytest.param(
            image(imageSelectionStrategy="Digest", constraint="stable"),
            "latest",
            'tag "latest" is not "stable", the tag watched (Digest)',
            id="digest",
        ),
        pytest.param(
            chart(semverConstraint=">=2"),
            "1.5.0",
            'version "1.5.0" does not satisfy semverConstraint ">=2": "1.5.0" is less than "2"',
            id="chart",
        ),
        pytest.param(
            image(constraint=">1.0.0"),
            "1.2.0-rc.1",
            'tag "1.2.0-rc.1" does not satisfy constraint ">1.0.0": "1.2.0-rc.1" is a '
            "prerelease version and the constraint is only looking for release versions",
            id="prerelease",
        ),
        pytest.param(
            image(constraint="<1 || >3"),
            "2.0.0",
            'tag "2.0.0" does not satisfy constraint "<1 || >3": "2.0.0" is greater than or'
            ' equal to "1"; "2.0.0" is less than or equal to "3"',
            id="every OR group's reason",
        ),
    ],
)
def test_reasons(sub: dict[str, Any], tag: str, reason: str) -> None:
    assert _compiled(sub).qualify(tag).reason == reason


# (subscription, kind, error fragment)
INVALID_CASES: list[tuple[str, Any, str, str]] = [
    ("bad allow regex", image(allowTagsRegexes=["(a"]), "image", 'allowTagsRegexes[0] "(a"'),
    (
        "lookahead is not RE2",
        image(imageSelectionStrategy="Lexical", ignoreTagsRegexes=["ok", "(?=x)"]),
        "image",
        'ignoreTagsRegexes[1] "(?=x)"',
    ),
    ("regex list not a list", image(allowTagsRegexes="^v"), "image", "must be a list"),
    ("regex not a string", image(allowTagsRegexes=[1]), "image", "allowTagsRegexes[0] must be"),
    ("bad constraint", image(constraint="^^1"), "image", 'invalid constraint "^^1"'),
    ("four-part constraint", image(constraint="1.2.3.4"), "image", "improper constraint"),
    ("bad semverConstraint", image(semverConstraint="foo"), "image", "semverConstraint"),
    ("bad chart constraint", chart(semverConstraint="1.2.3.4"), "chart", "semverConstraint"),
    ("deprecated allowTags", image(allowTags="^v"), "image", "allowTags is deprecated"),
    ("deprecated ignoreTags", image(ignoreTags=["latest"]), "image", "ignoreTags is deprecated"),
    (
        "deprecated on Lexical",
        image(imageSelectionStrategy="Lexical", ignoreTags=["x"]),
        "image",
        "ignoreTags is deprecated",
    ),
    ("unknown strategy", image(imageSelectionStrategy="Newest"), "image", '"Newest"'),
    ("digest without tag", image(imageSelectionStrategy="Digest"), "image", "must be set"),
    ("strictSemvers not a bool", image(strictSemvers="false"), "image", "strictSemvers"),
    ("constraint not a string", image(constraint=2), "image", "constraint must be a string"),
    ("missing repoURL", {"image": {}}, "image", "repoURL is required"),
    ("image body not an object", {"image": "quay.io/x"}, "image", "not an object"),
    ("two types", {"image": {"repoURL": QUAY}, "chart": {"repoURL": QUAY}}, "invalid", "has 2"),
    ("no type", {"name": "x"}, "invalid", "has 0"),
    ("not an object", ["image"], "invalid", "not an object"),
]


@pytest.mark.parametrize(
    ("sub", "kind", "fragment"),
    [pytest.param(s, k, f, id=name) for name, s, k, f in INVALID_CASES],
)
def test_invalid_subscriptions_are_skipped_with_a_reason(
    sub: Any, kind: str, fragment: str
) -> None:
    compiled = compile_subscription(sub)
    assert compiled.kind == kind
    assert not compiled.valid
    assert compiled.error is not None and fragment in compiled.error
    verdict = compiled.qualify("v1.0.0")
    assert not verdict.ok
    assert verdict.reason == f"subscription skipped: {compiled.error}"
    assert compiled.qualifies_any(["v1.0.0", "1.0.0"]) == (False, [verdict.reason])


def test_fields_of_a_compiled_subscription() -> None:
    compiled = compile_subscription({"name": "app", **image(constraint="^1")})
    assert (compiled.kind, compiled.repo_url, compiled.strategy, compiled.name) == (
        "image",
        QUAY,
        "SemVer",
        "app",
    )
    assert compile_subscription(chart()).kind == "chart"
    assert compile_subscription(chart()).strategy is None
    assert compile_subscription({"git": {"repoURL": "https://x/y"}}).kind == "git"
    assert compile_subscription({"artifact": {}}).kind == "other"
    bad = compile_subscription(image(allowTags="x"))
    assert (bad.kind, bad.repo_url) == ("image", QUAY)  # still indexable for `explain`


def test_one_bad_subscription_does_not_affect_another() -> None:
    subs = [image(allowTagsRegexes=["(unclosed"]), image(constraint="^1.0.0")]
    bad, good = (compile_subscription(s) for s in subs)
    assert bad.error is not None
    assert good.qualify("v1.2.0").ok


def test_qualifies_any() -> None:
    compiled = _compiled(image(constraint="^2.0.0"))
    assert compiled.qualifies_any(["latest", "v1.0.0", "v2.3.0", "v2.4.0"]) == (
        True,
        ['tag "v2.3.0" satisfies constraint "^2.0.0"'],
    )
    ok, reasons = compiled.qualifies_any(["latest", "v1.0.0", "latest", ""])
    assert not ok
    assert reasons == [
        'tag "latest" is not a semantic version',
        'tag "v1.0.0" does not satisfy constraint "^2.0.0": "1.0.0" is less than "2.0.0"',
    ]
    assert compiled.qualifies_any([]) == (False, ["no tags were pushed"])
    assert compiled.qualifies_any(iter(["", ""])) == (False, ["no tags were pushed"])


def test_git_and_generic_reasons() -> None:
    git = _compiled({"git": {"repoURL": "https://github.com/x/y"}})
    assert git.qualify("v1").reason == "Git subscriptions are not refreshed by image pushes"
    other = _compiled({"name": "n", "artifact": {}})
    assert other.qualify("v1").reason == "artifact subscriptions are not refreshed by image pushes"


def test_pathological_regex_runs_in_linear_time() -> None:
    # Exponential for a backtracking engine, linear for RE2: completing is the test.
    patterns = ["(a+)+$", "(x+x+)+y", "^(a|aa)+$"]
    evil = "a" * 5000 + "!"
    lexical = _compiled(image(imageSelectionStrategy="Lexical", ignoreTagsRegexes=patterns))
    assert lexical.qualify(evil).ok
    assert not lexical.qualify("a" * 5000).ok
    assert not lexical.qualify("x" * 5000 + "y").ok
    semver = _compiled(image(allowTagsRegexes=patterns))
    verdict = semver.qualify(evil)
    assert not verdict.ok
    assert "matches none of allowTagsRegexes" in verdict.reason


def test_tags_that_are_not_valid_utf8_do_not_break_matching() -> None:
    compiled = _compiled(image(imageSelectionStrategy="Lexical", ignoreTagsRegexes=["^x"]))
    assert compiled.qualify("y\ud800").ok
    assert not compiled.qualify("x\ud800").ok
