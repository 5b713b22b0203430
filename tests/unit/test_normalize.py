"""Repository URL normalization agrees with Kargo's (docs/contracts.md, "Matching")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushrelay.core.normalize import normalize_chart, normalize_image, repo_urls, sanitize

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Docker Hub official images: every spelling is the bare name.
        ("index.docker.io/library/busybox", "busybox"),
        ("index.docker.io/busybox", "busybox"),
        ("registry-1.docker.io/library/busybox", "busybox"),
        ("registry-1.docker.io/busybox", "busybox"),
        ("docker.io/library/busybox", "busybox"),
        ("docker.io/busybox", "busybox"),
        ("library/busybox", "busybox"),
        ("busybox", "busybox"),
        # Other Docker Hub images keep their namespace.
        ("index.docker.io/example/repo", "example/repo"),
        ("docker.io/example/repo", "example/repo"),
        ("example/repo", "example/repo"),
        # Other registries: registry/repository.
        ("quay.io/mynamespace/repository", "quay.io/mynamespace/repository"),
        ("ghcr.io/example/repo", "ghcr.io/example/repo"),
        ("registry.example.com/a/b/c", "registry.example.com/a/b/c"),
        # Ports are kept; localhost is a registry.
        ("registry.example.com:5000/team/app", "registry.example.com:5000/team/app"),
        ("localhost:5000/app", "localhost:5000/app"),
        ("localhost/app", "localhost/app"),
        # Tags and digests are dropped.
        ("quay.io/ns/repo:v1.2.3", "quay.io/ns/repo"),
        ("quay.io/ns/repo:latest", "quay.io/ns/repo"),
        (f"quay.io/ns/repo@{DIGEST}", "quay.io/ns/repo"),
        (f"quay.io/ns/repo:v1@{DIGEST}", "quay.io/ns/repo"),
        ("registry.example.com:5000/team/app:1.0", "registry.example.com:5000/team/app"),
        ("busybox:1.36", "busybox"),
        # Case, surrounding whitespace and non-printable runes.
        ("Quay.IO/MyNamespace/Repository", "quay.io/mynamespace/repository"),
        ("  quay.io/ns/repo \n", "quay.io/ns/repo"),
        ("\ufeffquay.io/ns/repo", "quay.io/ns/repo"),
        ("quay.io/ns/\u200brepo", "quay.io/ns/\u200brepo".replace("\u200b", "")),
        ("\tquay.io/ns/repo\r", "quay.io/ns/repo"),
        # Unparseable input is returned as it was.
        ("invalid url", "invalid url"),
        ("", ""),
        ("quay.io/ns/repo:", "quay.io/ns/repo:"),
        ("quay.io/ns/repo@sha256:short", "quay.io/ns/repo@sha256:short"),
        ("UPPER CASE url", "UPPER CASE url"),
    ],
)
def test_normalize_image(raw: str, expected: str) -> None:
    assert normalize_image(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("oci://quay.io/mynamespace/repository", "quay.io/mynamespace/repository"),
        ("OCI://Quay.io/MyNamespace/Chart", "quay.io/mynamespace/chart"),
        (" oci://ghcr.io/example/chart ", "ghcr.io/example/chart"),
        ("oci://registry-1.docker.io/library/nginx", "nginx"),
        ("quay.io/ns/chart", "quay.io/ns/chart"),
        ("oci://localhost:5000/charts/app:1.0.0", "localhost:5000/charts/app"),
    ],
)
def test_normalize_chart(raw: str, expected: str) -> None:
    assert normalize_chart(raw) == expected


#: Every case of Kargo's TestNormalizeChart (pkg/urls/helm_test.go), verbatim.
KARGO_CHART_CASES = [
    ("", ""),
    ("repo", "repo"),
    ("  repo  ", "repo"),
    ("REpo", "repo"),
    ("oci://repo", "repo"),
    ("  oci://repo  ", "repo"),
    ("OCI://Repo", "repo"),
    ("oci://docker.io/example/repo", "example/repo"),
    ("docker.io/example/repo", "example/repo"),
    ("oci://index.docker.io/example/repo", "example/repo"),
    ("index.docker.io/example/repo", "example/repo"),
    ("oci://registry-1.docker.io/example/repo", "example/repo"),
    ("registry-1.docker.io/example/repo", "example/repo"),
]


@pytest.mark.parametrize(("raw", "expected"), KARGO_CHART_CASES)
def test_kargo_chart_normalization_cases(raw: str, expected: str) -> None:
    assert normalize_chart(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [c for c in KARGO_CHART_CASES if c[0]])
def test_a_chart_subscription_matches_with_or_without_oci(raw: str, expected: str) -> None:
    """The subscription is found and its constraint applied, however it is spelled."""
    from pushrelay.core.matching import WarehouseIndex, route

    index = WarehouseIndex()
    index.upsert({"metadata": {"namespace": "a", "name": "w", "generation": 1},
                  "spec": {"subscriptions": [
                      {"chart": {"repoURL": raw, "semverConstraint": "^1"}}]}})
    pushed = repo_urls(f"docker.io/{expected}" if "/" in expected else expected)
    assert [m.name for m in route(index, pushed, ["1.2.0"], None)] == ["w"]
    assert route(index, pushed, ["2.0.0"], None) == []


def test_repo_urls_deduplicates_image_and_chart_forms() -> None:
    assert repo_urls("quay.io/mynamespace/repository") == ["quay.io/mynamespace/repository"]


def test_sanitize_drops_only_non_printable() -> None:
    assert sanitize("\ufeff a b \x00") == "a b"


@given(st.text(max_size=200))
def test_normalization_never_raises_and_is_idempotent(raw: str) -> None:
    once = normalize_image(raw)
    assert isinstance(once, str)
    if once != raw:  # it parsed: normalizing again changes nothing
        assert normalize_image(once) == once
    assert isinstance(normalize_chart(raw), str)
