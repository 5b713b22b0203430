"""The refresh patch itself, and what each API error means for it.

A refresh is a JSON merge patch of
``metadata.annotations["kargo.akuity.io/refresh"]`` to an RFC 3339 timestamp
with nanoseconds, unique per patch (strictly increasing within a process), so
Kargo's controller always sees a new value. API errors arrive already
translated (:class:`pushrelay.infra.kube.errors.KubeError`); :func:`outcome_of`
turns them into what the refresher does: retry, drop, or dead-letter
(docs/contracts.md, "Refresher"). Any other exception is a bug and propagates.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.events import WarehouseRef
from pushrelay.infra.kube.client import MergePatcher
from pushrelay.infra.kube.errors import Action, KubeError
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION, WAREHOUSE


def rfc3339_nanos(ns: int) -> str:
    """``ns`` since the epoch as ``2006-01-02T15:04:05.999999999Z`` (always 9 digits)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


class Stamper:
    """Refresh values: wall-clock nanoseconds, strictly increasing per process."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._last = 0

    def next(self) -> str:
        ns = max(self._clock_ns(), self._last + 1)
        self._last = ns
        return rfc3339_nanos(ns)


# Kubernetes object names (a CR's name is a DNS-1123 subdomain, a namespace a DNS-1123
# label). A refresh request may come from any producer: a name that is not one must
# never become part of an API path ("../warehouses/other" would patch another
# Warehouse; "a/b" or ".." reach other endpoints and 404 forever).
_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_NAMESPACE = re.compile(_LABEL)
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def invalid_ref(ref: WarehouseRef) -> str | None:
    """Why ``ref`` cannot name a Warehouse, or None when it can."""
    if len(ref.namespace) > 63 or not _NAMESPACE.fullmatch(ref.namespace):
        return f"namespace {ref.namespace[:80]!r} is not a valid Kubernetes namespace name"
    if len(ref.name) > 253 or not _NAME.fullmatch(ref.name):
        return f"name {ref.name[:80]!r} is not a valid Kubernetes object name"
    return None


def refresh_patch(value: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {REFRESH_ANNOTATION: value}}}


@dataclass(frozen=True)
class Patched:
    value: str  # the annotation written
    uid: str
    resource_version: str


class Outcome(Enum):
    RETRY = "retry"  # transient: back off, keep the requests
    DROP = "drop"  # the Warehouse is gone: the requests are done, counted
    REJECT = "reject"  # will never succeed: dead-letter the requests with the reason


def outcome_of(error: KubeError) -> Outcome:
    if error.action is Action.DROP:
        return Outcome.DROP
    if error.action is Action.REJECT:
        return Outcome.REJECT
    return Outcome.RETRY  # RETRY, and RELIST (meaningless for a patch)


def retry_reason(error: KubeError) -> str:
    """A low-cardinality metric label for a retried attempt."""
    status = error.status
    if status == 429:
        return "429"
    if status is not None and status >= 500:
        return "5xx"
    if status == 409:
        return "409"
    if status == 404:
        return "not-served"
    text = error.reason.lower()
    if "timeout" in text:
        return "timeout"
    return "connection" if not status else "other"


def refine_not_found(error: KubeError, ref: WarehouseRef) -> KubeError:
    """A 404 drops the requests only when its ``Status`` says *this Warehouse* is
    not found (reason ``NotFound``, ``details.name`` the Warehouse's).

    A 404 for the resource type itself ("404 page not found": the CRD is not
    served, e.g. for a moment while an API server starts) is transient.
    """
    if error.action is Action.DROP and not error.is_not_found(ref.name):
        return KubeError(Action.RETRY, f"resource not served: {error.reason}", error.status,
                         error.retry_after)
    return error


class Patcher:
    """Refreshes Warehouses through one API client, on its prepared merge-patch
    path (:class:`~pushrelay.infra.kube.client.MergePatcher`: no ``call_api``)."""

    def __init__(
        self, api: ApiClient, *, timeout: float = 10.0, stamper: Stamper | None = None
    ) -> None:
        self._patcher = MergePatcher(api, WAREHOUSE, request_timeout=timeout)
        self._timeout = timeout
        self._stamper = stamper or Stamper()

    async def refresh(self, ref: WarehouseRef) -> Patched:
        """Patch the refresh annotation once.

        API failures raise :class:`KubeError`; any other exception is a bug and
        propagates (the request is then retried after a restart, never
        dead-lettered).
        """
        problem = invalid_ref(ref)
        if problem is not None:
            raise KubeError(Action.REJECT, problem)  # dead-lettered, never retried
        value = self._stamper.next()
        try:
            async with asyncio.timeout(self._timeout + 5):  # belt and braces
                written = await self._patcher.patch(
                    ref.name, ref.namespace, orjson.dumps(refresh_patch(value)))
        except TimeoutError as exc:
            raise KubeError(Action.RETRY, f"timeout: {exc}") from exc
        except KubeError as exc:
            refined = refine_not_found(exc, ref)
            if refined is exc:
                raise
            raise refined from exc
        return Patched(value, written.uid, written.resource_version)
