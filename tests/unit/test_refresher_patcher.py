"""The refresh value, the patch body, and what each API error means."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import aiohttp
import orjson
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from pushrelay.infra.kube.errors import KubeError, from_response, translate, translated
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION
from refresher.patcher import (
    Outcome,
    Stamper,
    outcome_of,
    refine_not_found,
    refresh_patch,
    retry_reason,
    rfc3339_nanos,
)

RFC3339_NANOS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def test_rfc3339_nanos() -> None:
    assert rfc3339_nanos(0) == "1970-01-01T00:00:00.000000000Z"
    assert rfc3339_nanos(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    value = rfc3339_nanos(1_700_000_000_000_000_001)
    assert RFC3339_NANOS.match(value)
    parsed = datetime.fromisoformat(value[:26] + "+00:00")  # microseconds: what Python reads
    assert parsed == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_stamper_is_unique_even_with_a_frozen_clock() -> None:
    stamper = Stamper(clock_ns=lambda: 1_700_000_000_000_000_000)
    values = [stamper.next() for _ in range(1000)]
    assert len(set(values)) == 1000
    assert values == sorted(values)
    assert all(RFC3339_NANOS.match(v) for v in values)


def test_refresh_patch_is_a_merge_patch_of_one_annotation() -> None:
    assert refresh_patch("x") == {"metadata": {"annotations": {REFRESH_ANNOTATION: "x"}}}
    assert REFRESH_ANNOTATION == "kargo.akuity.io/refresh"


def api_error(status: int, retry_after: str | None = None) -> ApiException:
    exc = ApiException(status=status, reason="boom")
    exc.headers = {"Retry-After": retry_after} if retry_after else {}  # type: ignore[assignment]
    return exc


@pytest.mark.parametrize(("status", "outcome", "reason"), [
    (429, Outcome.RETRY, "429"),
    (500, Outcome.RETRY, "5xx"),
    (503, Outcome.RETRY, "5xx"),
    (504, Outcome.RETRY, "5xx"),
    (409, Outcome.RETRY, "409"),
    (404, Outcome.DROP, None),
    (403, Outcome.REJECT, None),
    (422, Outcome.REJECT, None),
    (401, Outcome.REJECT, None),
])
def test_outcomes(status: int, outcome: Outcome, reason: str | None) -> None:
    error = translate(api_error(status))
    assert outcome_of(error) is outcome
    if reason is not None:
        assert retry_reason(error) == reason


def test_transport_errors_retry() -> None:
    refused = translate(aiohttp.ClientConnectionError("connection refused"))
    assert outcome_of(refused) is Outcome.RETRY
    assert retry_reason(refused) == "connection"
    timeout = translate(TimeoutError())
    assert outcome_of(timeout) is Outcome.RETRY
    assert retry_reason(timeout) == "timeout"


def test_retry_after_is_read() -> None:
    assert translate(api_error(429, "3")).retry_after == 3.0


def not_found(name: str) -> bytes:
    return orjson.dumps({"kind": "Status", "status": "Failure", "code": 404,
                         "reason": "NotFound", "message": f'warehouses "{name}" not found',
                         "details": {"name": name, "kind": "warehouses"}})


def test_404_drops_only_when_the_warehouse_itself_is_not_found() -> None:
    from pushrelay.core.events import WarehouseRef

    ref = WarehouseRef(namespace="ns", name="app")
    gone = from_response(404, not_found("app"))
    assert outcome_of(refine_not_found(gone, ref)) is Outcome.DROP
    # decided by the Status, not its text: another object's NotFound is not this one's
    other = from_response(404, not_found("other"))
    assert outcome_of(refine_not_found(other, ref)) is Outcome.RETRY
    # the resource type is not served (CRD missing, API server starting): transient
    unserved = from_response(404, b"404 page not found")
    refined = refine_not_found(unserved, ref)
    assert outcome_of(refined) is Outcome.RETRY
    assert retry_reason(refined) == "not-served"
    forbidden = translate(ApiException(status=403, reason="forbidden"))
    assert refine_not_found(forbidden, ref) is forbidden


def test_only_api_and_transport_errors_are_translated() -> None:
    """A bug (ours or a library's) is never mistaken for an API answer."""
    with pytest.raises(TypeError):
        translate(ValueError("a bug"))
    with pytest.raises(KeyError), translated():
        raise KeyError("a bug")
    with pytest.raises(KubeError) as caught, translated():
        raise aiohttp.ServerDisconnectedError()
    assert outcome_of(caught.value) is Outcome.RETRY
