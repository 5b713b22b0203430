"""Which pushed tags would make Kargo refresh a Warehouse subscription.

A subscription (one raw item of a Warehouse's ``spec.subscriptions``) is
compiled once, when its Warehouse generation is indexed; checking a tag then
costs no parsing of the subscription and no I/O. The rules are Kargo's
``MatchesTag`` / ``MatchesVersion`` (pkg/image, pkg/helm/chart, as used by
pkg/webhook/external/refresh.go), as of Kargo's main branch in 2026:

* image, ``SemVer`` strategy (also when the strategy is absent or empty):
  the tag must first pass the ``ignoreTagsRegexes`` / ``allowTagsRegexes``
  filters below -- Kargo's semver selector embeds the tag-based selector, so
  the regexes apply to SemVer subscriptions too -- then parse as a semantic
  version and, when ``strictSemvers`` (absent means true, Kargo's defaulting
  webhook), also as a strict one after one leading ``v`` is removed; finally
  it must satisfy ``constraint`` (or the older ``semverConstraint`` when
  ``constraint`` is empty) if one is set.
* image, ``Lexical`` / ``NewestBuild``: the tag must not be matched by any
  ``ignoreTagsRegexes`` and, when ``allowTagsRegexes`` is non-empty, must be
  matched by one of them. Matching is an unanchored search, as Go's
  ``MatchString``; patterns are RE2 syntax, run by google-re2 in linear time.
* image, ``Digest``: the tag must equal ``constraint`` (the mutable tag).
* chart: the tag must parse as a (non-strict) semantic version and satisfy
  ``semverConstraint`` when set, however the repoURL is spelled (``oci://`` or
  not, any case, surrounding blanks: Kargo's ``NormalizeChart`` finds the
  subscription either way; an ``https://`` Helm repository is compiled too, and
  simply never equals a pushed repository). Kargo does not apply Helm's ``_`` → ``+``
  substitution here, so ``1.0.0_build`` does not qualify.
* git, and generic subscription types: never qualify for an image push.

A subscription Kargo itself would fail to build a selector for is compiled
with ``error`` set and never qualifies: a bad regex or constraint, an unknown
``imageSelectionStrategy``, and the deprecated ``allowTags`` / ``ignoreTags``
(rejected by Kargo since v1.11 for the tag-based strategies -- Digest ignores
them). Kargo would fail the
whole webhook request on such a subscription; here only it is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import re2

from pushrelay.core.constraints import Constraint, InvalidConstraint, re2_subject
from pushrelay.core.semver import InvalidVersion, Version, parse, parse_strict, quote

__all__ = [
    "CompiledSubscription",
    "Kind",
    "Verdict",
    "compile_subscription",
]

Kind = Literal["image", "chart", "git", "other", "invalid"]
STRATEGIES = ("SemVer", "Lexical", "NewestBuild", "Digest")

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.never_capture = True


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a tag qualifies, and a sentence saying why (or why not)."""

    ok: bool
    reason: str


class _Rule(Protocol):
    def qualify(self, tag: str) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class _Never:
    reason: str

    def qualify(self, tag: str) -> Verdict:
        return Verdict(False, self.reason)


@dataclass(frozen=True, slots=True)
class _TagFilter:
    """``ignoreTagsRegexes`` then ``allowTagsRegexes``, as Kargo applies them."""

    allow: tuple[tuple[str, Any], ...] = ()
    ignore: tuple[tuple[str, Any], ...] = ()

    def reject(self, tag: str) -> str | None:
        subject = re2_subject(tag)
        for pattern, regex in self.ignore:
            if regex.search(subject) is not None:
                return f"tag {quote(tag)} excluded by ignoreTagsRegexes {quote(pattern)}"
        if self.allow and not any(r.search(subject) is not None for _, r in self.allow):
            patterns = ", ".join(quote(p) for p, _ in self.allow)
            return f"tag {quote(tag)} matches none of allowTagsRegexes [{patterns}]"
        return None


@dataclass(frozen=True, slots=True)
class _Lexical:
    filter: _TagFilter
    strategy: str

    def qualify(self, tag: str) -> Verdict:
        if (reason := self.filter.reject(tag)) is not None:
            return Verdict(False, reason)
        how = "passes the tag filters" if self.filter.allow or self.filter.ignore else "is any tag"
        return Verdict(True, f"tag {quote(tag)} {how} ({self.strategy})")


def _satisfies(
    noun: str, tag: str, version: Version, constraint: Constraint | None, key: str
) -> Verdict:
    if constraint is None:
        return Verdict(True, f"{noun} {quote(tag)} is a semantic version (no {key})")
    ok, reasons = constraint.validate(version)
    if ok:
        return Verdict(True, f"{noun} {quote(tag)} satisfies {key} {quote(constraint.text)}")
    why = "; ".join(reasons)
    return Verdict(
        False, f"{noun} {quote(tag)} does not satisfy {key} {quote(constraint.text)}: {why}"
    )


@dataclass(frozen=True, slots=True)
class _SemVer:
    filter: _TagFilter
    strict: bool
    constraint: Constraint | None
    key: str  # "constraint", or the older "semverConstraint"

    def qualify(self, tag: str) -> Verdict:
        if (reason := self.filter.reject(tag)) is not None:
            return Verdict(False, reason)
        # Kargo's semver.Parse: NewVersion(tag), then, when strict,
        # StrictNewVersion(strings.TrimPrefix(tag, "v")).
        try:
            version = parse(tag)
        except InvalidVersion:
            return Verdict(False, f"tag {quote(tag)} is not a semantic version")
        if self.strict:
            try:
                parse_strict(tag.removeprefix("v"))
            except InvalidVersion:
                return Verdict(
                    False, f"tag {quote(tag)} is not a strict semantic version (strictSemvers)"
                )
        return _satisfies("tag", tag, version, self.constraint, self.key)


@dataclass(frozen=True, slots=True)
class _Chart:
    constraint: Constraint | None

    def qualify(self, tag: str) -> Verdict:
        try:
            version = parse(tag)
        except InvalidVersion:
            return Verdict(False, f"version {quote(tag)} is not a semantic version")
        return _satisfies("version", tag, version, self.constraint, "semverConstraint")


@dataclass(frozen=True, slots=True)
class _Digest:
    tag: str

    def qualify(self, tag: str) -> Verdict:
        if tag == self.tag:
            return Verdict(True, f"tag {quote(tag)} is the tag watched by the Digest strategy")
        return Verdict(
            False, f"tag {quote(tag)} is not {quote(self.tag)}, the tag watched (Digest)"
        )


@dataclass(frozen=True)
class CompiledSubscription:
    """One subscription, ready to judge tags.

    ``kind`` is the subscription's type (``invalid`` when it has none that can
    be told); ``error`` is set when Kargo would reject it, and then no tag
    qualifies. ``repo_url`` is the raw ``repoURL`` (empty when absent).
    """

    kind: Kind
    repo_url: str = ""
    error: str | None = None
    strategy: str | None = None  # images only: the effective selection strategy
    name: str | None = None
    _rule: _Rule = field(default=_Never("no rule"), repr=False, compare=False)

    @property
    def valid(self) -> bool:
        return self.error is None

    def qualify(self, tag: str) -> Verdict:
        """Would Kargo consider ``tag`` pushed to this repository a reason to refresh?"""
        if self.error is not None:
            return Verdict(False, f"subscription skipped: {self.error}")
        return self._rule.qualify(tag)

    def qualifies_any(self, tags: Iterable[str]) -> tuple[bool, list[str]]:
        """(True, [why]) for the first qualifying tag, else (False, [why not, per tag]).

        Duplicate and empty tags are ignored, as Kargo does.
        """
        if self.error is not None:
            return False, [f"subscription skipped: {self.error}"]
        reasons: list[str] = []
        for tag in dict.fromkeys(t for t in tags if t):
            verdict = self._rule.qualify(tag)
            if verdict.ok:
                return True, [verdict.reason]
            reasons.append(verdict.reason)
        return False, reasons or ["no tags were pushed"]


class _Invalid(Exception):
    """Internal: why a subscription cannot be compiled."""


def _string(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Invalid(f"{key} must be a string")
    return value


def _regexes(body: Mapping[str, Any], key: str) -> tuple[tuple[str, Any], ...]:
    patterns = body.get(key) or []
    if not isinstance(patterns, Sequence) or isinstance(patterns, str):
        raise _Invalid(f"{key} must be a list of strings")
    compiled = []
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            raise _Invalid(f"{key}[{i}] must be a string")
        try:
            compiled.append((pattern, re2.compile(re2_subject(pattern), _OPTIONS)))
        except re2.error as err:
            detail = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else err
            raise _Invalid(f"error compiling {key}[{i}] {quote(pattern)}: {detail}") from None
    return tuple(compiled)


def _constraint(text: str, key: str) -> Constraint | None:
    if not text:
        return None
    try:
        return Constraint.parse(text)
    except InvalidConstraint as err:
        raise _Invalid(f"invalid {key} {quote(text)}: {err.detail}") from None


def _tag_filter(body: Mapping[str, Any]) -> _TagFilter:
    # Kargo's order: allowTagsRegexes, allowTags, ignoreTagsRegexes, ignoreTags.
    allow = _regexes(body, "allowTagsRegexes")
    if body.get("allowTags"):
        raise _Invalid(
            "allowTags is deprecated and unsupported as of Kargo v1.11.0; "
            "use allowTagsRegexes instead"
        )
    ignore = _regexes(body, "ignoreTagsRegexes")
    if body.get("ignoreTags"):
        raise _Invalid(
            "ignoreTags is deprecated and unsupported as of Kargo v1.11.0; "
            "use ignoreTagsRegexes instead"
        )
    return _TagFilter(allow, ignore)


def _image_rule(body: Mapping[str, Any], strategy: str) -> _Rule:
    if strategy == "Digest":
        tag = _string(body, "constraint")
        if not tag:
            raise _Invalid("constraint must be set when imageSelectionStrategy is Digest")
        return _Digest(tag)
    tag_filter = _tag_filter(body)
    if strategy != "SemVer":
        return _Lexical(tag_filter, strategy)
    strict = body.get("strictSemvers", True)
    if strict is None:
        strict = True
    if not isinstance(strict, bool):
        raise _Invalid("strictSemvers must be a boolean")
    text = _string(body, "constraint")
    key = "constraint"
    if not text:
        text, key = _string(body, "semverConstraint"), "semverConstraint"
    return _SemVer(tag_filter, strict, _constraint(text, key), key)


def _chart_rule(body: Mapping[str, Any]) -> _Rule:
    return _Chart(_constraint(_string(body, "semverConstraint"), "semverConstraint"))


def compile_subscription(sub: Mapping[str, Any]) -> CompiledSubscription:
    """Compile one raw ``spec.subscriptions[i]`` item. Never raises."""
    if not isinstance(sub, Mapping):
        return CompiledSubscription("invalid", error="subscription is not an object")
    raw_name = sub.get("name")
    name = raw_name if isinstance(raw_name, str) else None
    keys = [k for k in sub if k != "name"]
    if len(keys) != 1:
        return CompiledSubscription(
            "invalid",
            name=name,
            error="subscription must have exactly one top-level field naming its type, "
            f"apart from an optional name, but has {len(keys)}",
        )
    key = str(keys[0])
    if key not in ("image", "chart", "git"):
        reason = f"{key} subscriptions are not refreshed by image pushes"
        return CompiledSubscription("other", name=name, _rule=_Never(reason))
    kind: Kind = "image" if key == "image" else "chart" if key == "chart" else "git"
    body = sub[key]
    if not isinstance(body, Mapping):
        return CompiledSubscription(kind, name=name, error=f"{key} is not an object")
    raw_url = body.get("repoURL")
    repo_url = raw_url if isinstance(raw_url, str) else ""
    strategy = None
    try:
        if not repo_url:
            raise _Invalid("repoURL is required")
        if kind == "git":
            rule: _Rule = _Never("Git subscriptions are not refreshed by image pushes")
        elif kind == "chart":
            rule = _chart_rule(body)
        else:
            strategy = _string(body, "imageSelectionStrategy") or "SemVer"
            if strategy not in STRATEGIES:
                raise _Invalid(f"unknown imageSelectionStrategy {quote(strategy)}")
            rule = _image_rule(body, strategy)
    except _Invalid as err:
        return CompiledSubscription(kind, repo_url, str(err), strategy, name)
    return CompiledSubscription(kind, repo_url, None, strategy, name, rule)
