"""Kubernetes API errors, translated once into what a caller should do.

Only what this module understands is translated (docs/architecture.md,
"Errors"): an HTTP status from the API server, a timeout, a connection
failure. Each becomes a :class:`KubeError` carrying an :class:`Action`. Any
other exception is a bug (ours or a library's) and propagates untouched: the
service fails its health check and restarts, and whatever it was doing is
retried — it is never mistaken for "the API server refused this".

"Not found" is decided from the API server's ``Status`` object (reason
``NotFound`` naming the object), never from message text: a 404 for a resource
type that is not served ("404 page not found") is a different, transient thing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio.client.exceptions import ApiException


class Action(Enum):
    RETRY = "retry"  # transient: back off and try again
    DROP = "drop"  # the object is gone: nothing to do
    REJECT = "reject"  # will never succeed: dead-letter / report
    RELIST = "relist"  # watch history expired (410 Gone)


class KubeError(Exception):
    """A failed API call with the action it calls for.

    ``api_reason`` and ``name`` come from the API server's ``Status`` body
    (``reason``, ``details.name``) when it sent one.
    """

    def __init__(
        self, action: Action, reason: str, status: int | None = None,
        retry_after: float | None = None, *, api_reason: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.action = action
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.api_reason = api_reason
        self.name = name

    def is_not_found(self, name: str) -> bool:
        """The API server said object ``name`` does not exist (not: "no such resource")."""
        return self.status == 404 and self.api_reason == "NotFound" and self.name == name


class KubeConfigError(Exception):
    """The kubeconfig (or the pod's service account) cannot be used: a settings
    error, reported in one line naming the source, never a traceback."""


#: Exceptions of the transport (connection refused/reset, TLS, timeouts): retried.
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
#: Everything :func:`translate` understands.
TRANSLATABLE = (ApiException, *TRANSPORT_ERRORS)


def action_for(status: int) -> Action:
    """What an HTTP status from the API server calls for."""
    if status == 404:
        return Action.DROP
    if status == 410:
        return Action.RELIST
    if status in (0, 409, 429) or status >= 500:
        return Action.RETRY
    return Action.REJECT


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    value = (headers or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def from_response(status: int, body: bytes | str | None,
                  headers: Mapping[str, Any] | None = None) -> KubeError:
    """The error for a non-2xx answer, with the ``Status`` object's reason and name."""
    raw = body.encode() if isinstance(body, str) else (body or b"")
    message, api_reason, name = raw[:200].decode(errors="replace"), None, None
    try:
        doc = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        message = str(doc.get("message") or doc.get("reason") or "")[:500]
        api_reason = doc.get("reason") if isinstance(doc.get("reason"), str) else None
        details = doc.get("details")
        if isinstance(details, dict) and isinstance(details.get("name"), str):
            name = details["name"]
    reason = f"{status} {message}".strip()
    return KubeError(action_for(status), reason, status, _retry_after(headers),
                     api_reason=api_reason, name=name)


def translate(exc: BaseException) -> KubeError:
    """The :class:`KubeError` for an exception this module understands.

    Raises ``TypeError`` for anything else: callers translate only inside
    :func:`translated`, which lets such exceptions propagate.
    """
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status or 0
        error = from_response(status, exc.body, exc.headers)
        if not exc.body and exc.reason:
            error.reason = f"{status} {exc.reason}".strip()
            error.args = (error.reason,)
        return error
    if isinstance(exc, TRANSPORT_ERRORS):
        return KubeError(Action.RETRY, f"{type(exc).__name__}: {exc}")
    raise TypeError(f"not a Kubernetes API error: {exc!r}") from exc


@contextmanager
def translated() -> Iterator[None]:
    """Raise API-server and transport failures in the block as :class:`KubeError`;
    let every other exception through unchanged."""
    try:
        yield
    except KubeError:
        raise
    except TRANSLATABLE as exc:
        raise translate(exc) from exc
