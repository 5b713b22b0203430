"""Repository URL normalization, exactly as Kargo compares repository URLs.

Kargo lowercases and sanitizes a URL, parses it as an image reference (the
rules of go-containerregistry's ``name.ParseReference`` with weak validation),
drops a tag or digest, drops Docker Hub's registry names along with the
implicit ``library/`` namespace, and keeps ``registry/repository`` otherwise.
Chart URLs lose an ``oci://`` scheme first. Input that does not parse is
returned unchanged (so it can still match a subscription spelled the same way).
"""

from __future__ import annotations

import re
from functools import lru_cache

DEFAULT_REGISTRY = "index.docker.io"
_DOCKER_HUB = {"index.docker.io", "registry-1.docker.io"}
_REPOSITORY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-./")
_TAG = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
# An RFC 3986 authority as Go's url.Parse accepts it back unchanged: a
# reg-name or IPv4 address, or a bracketed IPv6 literal, and an optional port.
_REGISTRY = re.compile(
    r"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?"
)


def sanitize(url: str) -> str:
    """Drop non-printable runes (byte-order marks, controls) anywhere; trim."""
    return "".join(ch for ch in url if ch.isprintable()).strip()


def _split_repository(name: str) -> tuple[str, str] | None:
    """``name`` → (registry, repository) or None when it is not a repository."""
    if not name:
        return None
    registry, repo = "", name
    first, sep, rest = name.partition("/")
    if sep and (first == "localhost" or "." in first or ":" in first):
        registry, repo = first, rest
    if not 1 <= len(repo) <= 255 or not set(repo) <= _REPOSITORY_CHARS:
        return None
    if not _REGISTRY.fullmatch(registry):
        return None
    if registry in ("", "docker.io"):
        registry = DEFAULT_REGISTRY
    return registry, repo


def _parse_tag_reference(ref: str) -> tuple[str, str] | None:
    parts = ref.split(":")
    base = ref
    if len(parts) > 1 and "/" not in parts[-1]:
        base, tag = ":".join(parts[:-1]), parts[-1]
        if not _TAG.fullmatch(tag):
            return None
    return _split_repository(base)


def _parse_digest_reference(ref: str) -> tuple[str, str] | None:
    parts = ref.split("@")
    if len(parts) != 2 or not _DIGEST.fullmatch(parts[1]):
        return None
    base = parts[0]
    tagged = _parse_tag_reference(base)
    if tagged is not None:
        return tagged
    return _split_repository(base)


def parse_reference(ref: str) -> tuple[str, str] | None:
    """Parse an image reference → (registry, repository), tag/digest dropped."""
    return _parse_tag_reference(ref) or _parse_digest_reference(ref)


@lru_cache(maxsize=65536)
def normalize_image(url: str) -> str:
    """Normalize an image repository URL the way Kargo does."""
    parsed = parse_reference(sanitize(url.lower()))
    if parsed is None:
        return url
    registry, repo = parsed
    if registry == DEFAULT_REGISTRY and "/" not in repo:
        repo = f"library/{repo}"
    if registry in _DOCKER_HUB:
        return repo.removeprefix("library/")
    return f"{registry}/{repo}"


@lru_cache(maxsize=65536)
def normalize_chart(url: str) -> str:
    """Normalize a chart repository URL: ``oci://`` dropped, then as an image."""
    return normalize_image(sanitize(url).lower().removeprefix("oci://"))


def repo_urls(docker_url: str) -> list[str]:
    """Every normalized form of a pushed repository, deduplicated, in order."""
    forms = [normalize_image(docker_url), normalize_chart(docker_url)]
    return list(dict.fromkeys(forms))
