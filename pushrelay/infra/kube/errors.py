"""Kubernetes API errors, translated once into what a caller should do."""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException


class Action(Enum):
    RETRY = "retry"  # transient: back off and try again
    DROP = "drop"  # the object is gone: nothing to do
    REJECT = "reject"  # will never succeed: dead-letter / report
    RELIST = "relist"  # watch history expired (410 Gone)


class KubeError(Exception):
    """A failed API call with the action it calls for."""

    def __init__(
        self, action: Action, reason: str, status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.action = action
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def _retry_after(exc: ApiException) -> float | None:
    headers: Any = exc.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(exc: BaseException) -> KubeError:
    """Map any exception raised by an API call to a :class:`KubeError`."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status or 0
        reason = f"{status} {exc.reason or ''}".strip()
        if status == 404:
            return KubeError(Action.DROP, reason, status)
        if status == 410:
            return KubeError(Action.RELIST, reason, status)
        if status == 429 or status >= 500 or status == 0:
            return KubeError(Action.RETRY, reason, status, _retry_after(exc))
        if status == 409:
            return KubeError(Action.RETRY, reason, status)
        return KubeError(Action.REJECT, reason, status)
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ClientError | OSError):
        return KubeError(Action.RETRY, f"{type(exc).__name__}: {exc}")
    return KubeError(Action.REJECT, f"{type(exc).__name__}: {exc}")
