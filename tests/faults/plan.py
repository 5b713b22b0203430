"""What a fault scenario pushes, which Warehouses exist, and which each push must refresh.

``unique`` Warehouses ``u-<k>`` each subscribe to one repository with the SemVer
constraint ``=1.<k>.0``: push ``p`` (tag ``1.<p % unique>.0``) refreshes exactly
``u-<p % unique>``, so a lost push is not hidden by the next one (until the
plan wraps around). Per repository, ``s-<r>`` takes every SemVer tag (it sees
every push to ``r``: the coalescing case) and ``d-<r>`` takes none (``^999``:
refreshing it would be a matching bug).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pushrelay.infra.kube.resources import WAREHOUSE


@dataclass(frozen=True)
class Plan:
    repos: int = 6
    unique: int = 600  # a multiple of ``repos``

    def __post_init__(self) -> None:
        assert self.unique % self.repos == 0, "unique must be a multiple of repos"

    @staticmethod
    def repository(r: int) -> str:
        return f"quay.io/faults/app-{r}"

    def push(self, p: int) -> tuple[str, str]:
        """(docker_url, tag) of push ``p``."""
        k = p % self.unique
        return self.repository(k % self.repos), f"1.{k}.0"

    def expected(self, p: int) -> tuple[str, ...]:
        """The Warehouses push ``p`` must refresh."""
        k = p % self.unique
        return (f"u-{k:04d}", f"s-{k % self.repos}")

    def decoys(self) -> list[str]:
        return [f"d-{r}" for r in range(self.repos)]

    def warehouses(self, namespace: str) -> list[dict[str, Any]]:
        bodies = []

        def body(name: str, r: int, constraint: str | None) -> dict[str, Any]:
            image: dict[str, Any] = {"repoURL": self.repository(r)}
            if constraint:
                image["constraint"] = constraint
            return {"apiVersion": WAREHOUSE.api_version, "kind": WAREHOUSE.kind,
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"subscriptions": [{"image": image}]}}

        for k in range(self.unique):
            bodies.append(body(f"u-{k:04d}", k % self.repos, f"=1.{k}.0"))
        for r in range(self.repos):
            bodies.append(body(f"s-{r}", r, None))
            bodies.append(body(f"d-{r}", r, "^999.0.0"))
        return bodies

    def as_json(self) -> dict[str, int]:
        return {"repos": self.repos, "unique": self.unique}
