"""Semantic versions exactly as Masterminds/semver v3.5.0 parses and orders them.

Kargo (go.mod: ``github.com/Masterminds/semver/v3 v3.5.0``) decides with this
library which tags are versions; this module reproduces it, quirks included:

* :func:`parse` is ``NewVersion`` with its default ``CoerceNewVersion = true``:
  a lowercase ``v`` prefix and missing minor/patch are allowed (``v1`` →
  1.0.0, ``1.2`` → 1.2.0), and so are leading zeros in the numeric parts
  (``01.02.03`` → 1.2.3). A numeric *prerelease* identifier with a leading
  zero (``1.2.3-rc.01``) is still rejected.
* :func:`parse_strict` is ``StrictNewVersion``: exactly MAJOR.MINOR.PATCH, no
  leading zeros and **no** leading ``v``. Kargo's ``strictSemvers`` check is
  ``NewVersion(tag)`` *and* ``StrictNewVersion(strings.TrimPrefix(tag, "v"))``
  (pkg/controller/semver/parser.go); :func:`parse_tag` implements that.
* Both reject input longer than 256 bytes (``MaxVersionLen``, new in v3.5.0).
* Numbers are uint64: a larger MAJOR/MINOR/PATCH is an error, and a numeric
  prerelease identifier larger than 2**64-1 is compared as text.
* Precedence follows semver 2.0 (build metadata ignored), so two versions
  that differ only in metadata compare *and hash* equal.

Only fixed, linear-time patterns are applied to the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_VERSION_LEN",
    "InvalidVersion",
    "Version",
    "parse",
    "parse_strict",
    "parse_tag",
]

MAX_VERSION_LEN = 256
_UINT64_MAX = 2**64 - 1
_DIGITS = frozenset("0123456789")
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789")

# Masterminds' looseSemVerRegex, used by NewVersion in coercing mode.
_LOOSE = re.compile(
    r"v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?"
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
    r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
)


def quote(s: str) -> str:
    """Double-quote ``s`` for messages, escaping like Go's ``%q`` for ASCII."""
    if s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def byte_len(s: str) -> int:
    """Length of ``s`` in UTF-8 bytes (Go's ``len``), lone surrogates included."""
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


class InvalidVersion(ValueError):
    """``version`` is not a semantic version; ``detail`` says why."""

    def __init__(self, version: str, detail: str) -> None:
        super().__init__(f"invalid semantic version {quote(version)}: {detail}")
        self.version = version
        self.detail = detail


@dataclass(frozen=True, eq=False, slots=True)
class Version:
    """A parsed version. ``==``, ``<`` … and ``hash`` follow semver precedence."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""
    metadata: str = ""
    original: str = field(default="", compare=False)

    def __str__(self) -> str:
        """The canonical form: no leading ``v``, all three numbers."""
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            s += "-" + self.prerelease
        if self.metadata:
            s += "+" + self.metadata
        return s

    def compare(self, other: Version) -> int:
        """-1, 0 or 1 like Masterminds' ``Version.Compare``."""
        mine = (self.major, self.minor, self.patch)
        theirs = (other.major, other.minor, other.patch)
        if mine != theirs:
            return -1 if mine < theirs else 1
        if self.prerelease == other.prerelease:
            return 0
        if not self.prerelease:
            return 1
        if not other.prerelease:
            return -1
        return compare_prerelease(self.prerelease, other.prerelease)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.compare(other) == 0

    def __hash__(self) -> int:
        return hash((self.major, self.minor, self.patch, self.prerelease))

    def __lt__(self, other: Version) -> bool:
        return self.compare(other) < 0

    def __le__(self, other: Version) -> bool:
        return self.compare(other) <= 0

    def __gt__(self, other: Version) -> bool:
        return self.compare(other) > 0

    def __ge__(self, other: Version) -> bool:
        return self.compare(other) >= 0


def _as_uint(part: str) -> int | None:
    """``strconv.ParseUint(part, 10, 64)``: the value, or None when it fails."""
    if not part or not set(part) <= _DIGITS:
        return None
    value = int(part)
    return value if value <= _UINT64_MAX else None


def _compare_part(s: str, o: str) -> int:
    if s == o:
        return 0
    if not s:
        return -1
    if not o:
        return 1
    si, oi = _as_uint(s), _as_uint(o)
    if si is None and oi is None:
        return 1 if s > o else -1
    if oi is None:  # o is text, s a number: numbers sort first
        return -1
    if si is None:
        return 1
    return 1 if si > oi else -1


def compare_prerelease(a: str, b: str) -> int:
    """Compare two prerelease strings identifier by identifier (semver §11)."""
    left, right = a.split("."), b.split(".")
    for i in range(max(len(left), len(right))):
        d = _compare_part(
            left[i] if i < len(left) else "",
            right[i] if i < len(right) else "",
        )
        if d:
            return d
    return 0


def _prerelease_error(pre: str) -> str | None:
    for part in pre.split("."):
        if not part:
            return "invalid prerelease string"
        if set(part) <= _DIGITS:
            if len(part) > 1 and part[0] == "0":
                return "version segment starts with 0"
        elif not set(part) <= _ALLOWED:
            return "invalid prerelease string"
    return None


def _metadata_error(meta: str) -> str | None:
    for part in meta.split("."):
        if not part or not set(part) <= _ALLOWED:
            return "invalid metadata string"
    return None


def _number(v: str, part: str) -> int:
    value = int(part)
    if value > _UINT64_MAX:
        raise InvalidVersion(v, f"error parsing version segment: {part} is out of range")
    return value


def parse(v: str) -> Version:
    """Masterminds ``NewVersion`` (coercing): ``v1.2`` → 1.2.0.

    Raises :class:`InvalidVersion`.
    """
    if byte_len(v) > MAX_VERSION_LEN:
        raise InvalidVersion(v, f"version string is too long (max {MAX_VERSION_LEN} bytes)")
    m = _LOOSE.fullmatch(v) if v.isascii() else None
    if m is None:
        raise InvalidVersion(v, "invalid semantic version")
    pre = m.group(5) or ""
    meta = m.group(8) or ""
    major = _number(v, m.group(1))
    minor = _number(v, m.group(2)[1:]) if m.group(2) else 0
    patch = _number(v, m.group(3)[1:]) if m.group(3) else 0
    problem = (_prerelease_error(pre) if pre else None) or (_metadata_error(meta) if meta else None)
    if problem:
        raise InvalidVersion(v, problem)
    return Version(major, minor, patch, pre, meta, v)


def parse_strict(v: str) -> Version:
    """Masterminds ``StrictNewVersion``: exactly ``MAJOR.MINOR.PATCH[-PRE][+META]``.

    No leading ``v``, no leading zeros. Raises :class:`InvalidVersion`.
    """
    if not v:
        raise InvalidVersion(v, "version string empty")
    if byte_len(v) > MAX_VERSION_LEN:
        raise InvalidVersion(v, f"version string is too long (max {MAX_VERSION_LEN} bytes)")
    parts = v.split(".", 2)
    if len(parts) != 3:
        raise InvalidVersion(v, "invalid semantic version")
    meta = pre = ""
    if "+" in parts[2]:
        parts[2], meta = parts[2].split("+", 1)
        if problem := _metadata_error(meta):
            raise InvalidVersion(v, problem)
    if "-" in parts[2]:
        parts[2], pre = parts[2].split("-", 1)
        if problem := _prerelease_error(pre):
            raise InvalidVersion(v, problem)
    for part in parts:
        if not set(part) <= _DIGITS:
            raise InvalidVersion(v, "invalid characters in version")
        if len(part) > 1 and part[0] == "0":
            raise InvalidVersion(v, "version segment starts with 0")
    numbers = [_as_uint(p) for p in parts]
    if None in numbers:
        raise InvalidVersion(v, "error parsing version segment")
    major, minor, patch = (n or 0 for n in numbers)
    return Version(major, minor, patch, pre, meta, v)


def parse_tag(tag: str, *, strict: bool) -> Version:
    """Kargo's ``semver.Parse(tag, strict)`` for image and Git tags.

    The tag must parse with :func:`parse`; when ``strict`` it must also parse
    with :func:`parse_strict` once one leading ``v`` is removed. The returned
    version keeps ``tag`` as its original. Raises :class:`InvalidVersion`.
    """
    version = parse(tag)
    if strict:
        parse_strict(tag.removeprefix("v"))
    return version
