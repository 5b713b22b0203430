"""Version constraints exactly as Masterminds/semver v3.5.0 evaluates them.

Syntax: comparators joined by ``,`` or whitespace (AND) and ``||`` (OR);
operators ``=`` (or none), ``!=``, ``>``, ``<``, ``>=``/``=>``, ``<=``/``=<``,
``~``/``~>`` and ``^``; ``x``, ``X`` or ``*`` as a wildcard in any position
(``1.2.x``, ``2.*``, ``*``); hyphen ranges ``1.2 - 1.4.5`` (spaces required,
rewritten to ``>= 1.2, <= 1.4.5``). Limits: 512 bytes, 32 ``||`` groups.

Semantics worth knowing (all Masterminds', reproduced on purpose):

* A prerelease version only satisfies an AND group in which at least one
  comparator carries a prerelease (``>= 1.0.0-0``), or every group when
  ``include_prerelease`` is set (Kargo never sets it). Then ranges span
  prereleases of any patch (``~1.2.3-beta.2`` matches ``1.2.4-beta.2``).
* A wildcard makes a comparator a range: ``=1.2``/``1.2`` mean ``~1.2``;
  ``>1.1`` means ``>=1.2.0``; ``<=1.1`` means ``<1.2.0``; ``!=4.x`` means
  "not 4.*"; ``^0.x`` means ``<1.0.0``; ``~*``, ``*`` and ``~0.0.0`` match any
  release.
* Build metadata in a wildcard comparator is dropped; an empty constraint
  string is an error (Kargo treats an empty field as "no constraint").

The grammar is checked with Masterminds' own regular expressions, run by RE2
(the engine behind Go's ``regexp``) so that matching is linear-time and the
leftmost-first choices are identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import re2

from pushrelay.core.semver import (
    InvalidVersion,
    Version,
    byte_len,
    compare_prerelease,
    parse,
    quote,
)

__all__ = [
    "MAX_CONSTRAINT_GROUPS",
    "MAX_CONSTRAINT_LEN",
    "Comparator",
    "Constraint",
    "InvalidConstraint",
]

MAX_CONSTRAINT_LEN = 512
MAX_CONSTRAINT_GROUPS = 32

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_WS = r"[\t\n\f\r ]"  # Go's \s
_OPS = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^"
_CV = (
    r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?"
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
    r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
)
_CONSTRAINT = re2.compile(rf"{_WS}*({_OPS}){_WS}*({_CV}){_WS}*", _OPTIONS)
_RANGE = re2.compile(rf"{_WS}*({_CV}){_WS}+-{_WS}+({_CV}){_WS}*", _OPTIONS)
_FIND = re2.compile(rf"({_OPS}){_WS}*({_CV})", _OPTIONS)
_VALID = re2.compile(
    rf"({_WS}*({_OPS}){_WS}*({_CV}){_WS}*)((?:{_WS}+|,{_WS}*)({_OPS}){_WS}*({_CV}){_WS}*)*",
    _OPTIONS,
)


class InvalidConstraint(ValueError):
    """``constraint`` is not a valid constraint; ``detail`` says why."""

    def __init__(self, constraint: str, detail: str) -> None:
        super().__init__(f"invalid semver constraint {quote(constraint)}: {detail}")
        self.constraint = constraint
        self.detail = detail


def _is_x(s: str) -> bool:
    return s in ("x", "X", "*")


@dataclass(frozen=True, slots=True)
class Comparator:
    """One comparison, e.g. ``>=1.2``: ``op`` and ``orig`` as written."""

    op: str
    orig: str
    version: Version  # the bound, wildcards and missing parts as 0
    dirty: bool = False  # some part is a wildcard or missing
    minor_dirty: bool = False  # ... from the minor part on (``1``, ``1.x``)
    patch_dirty: bool = False  # ... only the patch (``1.2``, ``1.2.*``)

    def __str__(self) -> str:
        return self.op + self.orig

    def test(self, v: Version, include_prerelease: bool) -> str | None:
        """None when ``v`` satisfies this comparator, else the reason."""
        if v.prerelease and not include_prerelease:
            return _PRE_ONLY.format(quote(str(v)))
        return _OPS_FUNCS[self.op](v, self)


_PRE_ONLY = "{} is a prerelease version and the constraint is only looking for release versions"


def _msg(v: Version, c: Comparator, text: str) -> str:
    return f"{quote(str(v))} {text} {quote(c.orig)}"


def _not_equal(v: Version, c: Comparator) -> str | None:
    con = c.version
    if c.dirty:
        if con.major != v.major:
            return None
        if con.minor != v.minor and not c.minor_dirty:
            return None
        if c.minor_dirty:
            return _msg(v, c, "is equal to")
        if con.patch != v.patch and not c.patch_dirty:
            return None
        if c.patch_dirty:
            if (v.prerelease or con.prerelease) and _prerelease_differs(v, con):
                return None
            return _msg(v, c, "is equal to")
    return _msg(v, c, "is equal to") if v == con else None


def _prerelease_differs(v: Version, con: Version) -> bool:
    return compare_prerelease(v.prerelease, con.prerelease) != 0


def _greater_than(v: Version, c: Comparator) -> str | None:
    con = c.version
    if not c.dirty:
        ok = v.compare(con) == 1
    elif v.major != con.major:
        ok = v.major > con.major
    elif c.minor_dirty:  # >11 needs 12 or higher
        ok = False
    elif c.patch_dirty:  # >11.1 needs 11.2 or higher
        ok = v.minor > con.minor
    else:
        ok = v.compare(con) == 1
    return None if ok else _msg(v, c, "is less than or equal to")


def _less_than(v: Version, c: Comparator) -> str | None:
    return None if v.compare(c.version) < 0 else _msg(v, c, "is greater than or equal to")


def _greater_equal(v: Version, c: Comparator) -> str | None:
    return None if v.compare(c.version) >= 0 else _msg(v, c, "is less than")


def _less_equal(v: Version, c: Comparator) -> str | None:
    con = c.version
    if not c.dirty:
        ok = v.compare(con) <= 0
    elif v.major > con.major:
        ok = False
    else:
        ok = not (v.major == con.major and v.minor > con.minor and not c.minor_dirty)
    return None if ok else _msg(v, c, "is greater than")


def _tilde(v: Version, c: Comparator) -> str | None:
    con = c.version
    if v.compare(con) < 0:
        return _msg(v, c, "is less than")
    # ~0.0.0 (and ~*, *, x) accepts everything that is not lower.
    if (con.major, con.minor, con.patch) == (0, 0, 0) and not (c.minor_dirty or c.patch_dirty):
        return None
    if v.major != con.major:
        return _msg(v, c, "does not have same major version as")
    if v.minor != con.minor and not c.minor_dirty:
        return _msg(v, c, "does not have same major and minor version as")
    return None


def _tilde_or_equal(v: Version, c: Comparator) -> str | None:
    if c.dirty:
        return _tilde(v, c)
    return None if v == c.version else _msg(v, c, "is not equal to")


def _caret(v: Version, c: Comparator) -> str | None:
    con = c.version
    if v.compare(con) < 0:
        return _msg(v, c, "is less than")
    if con.major > 0 or c.minor_dirty:
        if v.major == con.major:
            return None
        return _msg(v, c, "does not have same major version as")
    if v.major > 0:
        return _msg(v, c, "does not have same major version as")
    if con.minor > 0 or c.patch_dirty:
        if v.minor == con.minor:
            return None
        return _msg(v, c, "does not have same minor version as") + (
            ". Expected minor versions to match when constraint major version is 0"
        )
    if v.minor > 0:
        return _msg(v, c, "does not have same minor version as")
    if v.patch == con.patch:
        return None
    return _msg(v, c, "does not equal") + (
        ". Expect version and constraint to equal when major and minor versions are 0"
    )


_OPS_FUNCS: dict[str, Callable[[Version, Comparator], str | None]] = {
    "": _tilde_or_equal,
    "=": _tilde_or_equal,
    "!=": _not_equal,
    ">": _greater_than,
    "<": _less_than,
    ">=": _greater_equal,
    "=>": _greater_equal,
    "<=": _less_equal,
    "=<": _less_equal,
    "~": _tilde,
    "~>": _tilde,
    "^": _caret,
}


def _parse_comparator(text: str, whole: str) -> Comparator:
    """Masterminds ``parseConstraint`` for one comparator found in ``whole``."""
    if not text:  # only reachable directly: "" means * (>= 0.0.0)
        return Comparator("", "", Version(0, 0, 0, original="0.0.0"), dirty=True)
    m = _CONSTRAINT.fullmatch(text)
    if m is None:
        raise InvalidConstraint(whole, f"improper constraint: {quote(text)}")
    op, orig = m.group(1), m.group(2)
    major, minor, patch = m.group(3), m.group(4) or "", m.group(5) or ""
    pre = m.group(6) or ""
    minor_dirty = patch_dirty = dirty = False
    ver = orig
    if _is_x(major):
        ver, dirty = f"0.0.0{pre}", True
    elif not minor or _is_x(minor[1:]):
        ver, dirty, minor_dirty = f"{major}.0.0{pre}", True, True
    elif not patch or _is_x(patch[1:]):
        ver, dirty, patch_dirty = f"{major}{minor}.0{pre}", True, True
    try:
        version = parse(ver)
    except InvalidVersion as err:
        raise InvalidConstraint(whole, f"constraint parser error: {err.detail}") from None
    return Comparator(op, orig, version, dirty, minor_dirty, patch_dirty)


def _rewrite_range(text: str) -> str:
    """``1.2 - 3`` → ``>= 1.2, <= 3 `` (Masterminds ``rewriteRange``)."""
    out = text
    for m in _RANGE.finditer(text):
        out = out.replace(m.group(0), f">= {m.group(1)}, <= {m.group(11)} ", 1)
    return out


def re2_subject(text: str) -> str:
    """``text`` with lone surrogates replaced so RE2 can read it as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


@dataclass(frozen=True)
class Constraint:
    """A parsed constraint: OR of AND groups of :class:`Comparator`."""

    text: str
    groups: tuple[tuple[Comparator, ...], ...]
    include_prerelease: bool = False
    _group_has_pre: tuple[bool, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, *, include_prerelease: bool = False) -> Constraint:
        """Masterminds ``NewConstraint``. Raises :class:`InvalidConstraint`."""
        if byte_len(text) > MAX_CONSTRAINT_LEN:
            raise InvalidConstraint(
                text, f"constraint string is too long (max {MAX_CONSTRAINT_LEN} bytes)"
            )
        ors = _rewrite_range(re2_subject(text)).split("||")
        if len(ors) > MAX_CONSTRAINT_GROUPS:
            raise InvalidConstraint(
                text, f"too many constraint groups (max {MAX_CONSTRAINT_GROUPS})"
            )
        groups = []
        for segment in ors:
            if _VALID.fullmatch(segment) is None:
                raise InvalidConstraint(text, f"improper constraint: {quote(segment)}")
            found = [m.group(0) for m in _FIND.finditer(segment)] or [segment]
            groups.append(tuple(_parse_comparator(s, text) for s in found))
        has_pre = tuple(any(c.version.prerelease for c in g) for g in groups)
        return cls(text, tuple(groups), include_prerelease, has_pre)

    def _include_pre(self, i: int) -> bool:
        return self.include_prerelease or self._group_has_pre[i]

    def check(self, v: Version) -> bool:
        """Whether ``v`` satisfies the constraint (Masterminds ``Check``)."""
        return any(
            all(c.test(v, self._include_pre(i)) is None for c in group)
            for i, group in enumerate(self.groups)
        )

    def validate(self, v: Version) -> tuple[bool, list[str]]:
        """(satisfied, reasons): Masterminds ``Validate``, reasons as text.

        Every failing comparator of every group contributes one reason (the
        "prerelease" reason at most once); the list is empty when satisfied.
        """
        reasons: list[str] = []
        said_pre = False
        for i, group in enumerate(self.groups):
            include_pre = self._include_pre(i)
            joy = True
            for c in group:
                if v.prerelease and not include_pre:
                    if not said_pre:
                        reasons.append(_PRE_ONLY.format(quote(str(v))))
                        said_pre = True
                    joy = False
                elif (reason := c.test(v, include_pre)) is not None:
                    reasons.append(reason)
                    joy = False
            if joy:
                return True, []
        return False, reasons

    def __str__(self) -> str:
        """Masterminds ``String()``: ``>=1.2.3 <2 || 3.x``."""
        return " || ".join(" ".join(str(c) for c in g) for g in self.groups)
