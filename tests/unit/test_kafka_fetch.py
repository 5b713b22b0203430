"""The Kafka consumer's adaptive fetch: long broker waits only while idle."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from pushrelay.infra.bus.kafka import BUSY_FETCH, IDLE_FETCH, adaptive_fetch


class FakeFetcher:
    """aiokafka's fetcher as far as :func:`adaptive_fetch` looks at it."""

    def __init__(self, answers: list[bool]) -> None:
        self._fetch_min_bytes, self._fetch_max_wait_ms = BUSY_FETCH
        self._answers = answers
        self.sent: list[tuple[int, int]] = []

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        self.sent.append((self._fetch_min_bytes, self._fetch_max_wait_ms))
        return self._answers.pop(0)


def test_idle_fetches_wait_on_the_broker_busy_ones_gather() -> None:
    fetcher = FakeFetcher([False, False, True, True, False])
    consumer: Any = SimpleNamespace(_fetcher=fetcher)
    assert adaptive_fetch(consumer) and adaptive_fetch(consumer)  # idempotent

    async def fetch_five() -> None:
        for _ in range(5):
            await fetcher._proc_fetch_request(None, 0, None)
    asyncio.run(fetch_five())
    # Each request is built from what the previous answer said.
    assert fetcher.sent == [BUSY_FETCH, IDLE_FETCH, IDLE_FETCH, BUSY_FETCH, BUSY_FETCH]
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == IDLE_FETCH
    assert IDLE_FETCH[0] == 1  # an idle fetch answers at the first record


def test_an_unexpected_fetcher_is_left_alone() -> None:
    consumer: Any = SimpleNamespace(_fetcher=SimpleNamespace())
    assert not adaptive_fetch(consumer)
