"""Jittered exponential backoff that honours ``Retry-After``: the one implementation.

Every retry loop uses it: the informers (re-list/re-watch), the ingress's Kafka
connection, the router's unacknowledged sends, the refresher's patches and
dead letters.

The delay before retry number ``attempt`` (1-based) is drawn uniformly from
``[cap / 2, cap]`` with ``cap = min(max_delay, base * factor ** (attempt - 1))``
("equal jitter": never a retry storm of zero delays, never synchronised
replicas). A server's ``Retry-After`` is a floor: we never retry sooner than
the server asked, up to ``retry_after_limit`` so a bogus header cannot park a
Warehouse for hours.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    base: float = 0.2
    factor: float = 2.0
    max_delay: float = 30.0
    retry_after_limit: float = 300.0
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.max_delay <= 0:
            raise ValueError("base and max_delay must be positive, factor at least 1")

    def cap(self, attempt: int) -> float:
        """The largest delay for ``attempt`` (1-based), before jitter."""
        exponent = max(0, attempt - 1)
        if exponent > 64:  # avoid float overflow: long past max_delay anyway
            return self.max_delay
        return min(self.max_delay, self.base * self.factor**exponent)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt``."""
        cap = self.cap(attempt)
        jittered = cap / 2 + self.rand() * cap / 2
        if retry_after is not None and retry_after > 0:
            return max(jittered, min(retry_after, self.retry_after_limit))
        return jittered
