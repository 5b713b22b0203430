"""A global token bucket: the refresher's API-server write budget.

``rate`` tokens per second accrue up to ``burst``. :meth:`TokenBucket.reserve`
is the pure core: it takes one token *now*, possibly going into debt, and says
how long the caller must wait before using it. Reservations are served in call
order, so waiters are FIFO without a lock. :meth:`acquire` is the async face
(it sleeps the reserved delay, and gives the token back when cancelled).

:meth:`pause` pushes every later reservation past a moment: a 429 with
``Retry-After`` from the API server slows every writer, not just the one that
got it. The clock and the sleep are injectable so tests use a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    def __init__(
        self, rate: float, burst: int, *, clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()  # tokens are counted up to here; in the future while paused

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def available(self, now: float | None = None) -> float:
        """Tokens available at ``now`` (negative: reservations are queued)."""
        self._refill(self._clock() if now is None else now)
        return self._tokens

    def reserve(self, now: float | None = None) -> float:
        """Take one token; return the seconds to wait before it may be used."""
        now = self._clock() if now is None else now
        self._refill(now)
        self._tokens -= 1.0
        debt = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        return max(0.0, self._stamp - now) + debt

    def refund(self) -> None:
        """Give back a reserved token that was not used."""
        self._tokens = min(self.burst, self._tokens + 1.0)

    def pause(self, seconds: float, now: float | None = None) -> None:
        """No new reservation may be used before ``now + seconds``.

        Tokens stop accruing until then and the unused burst is forfeited, so
        writes resume at ``rate`` afterwards instead of as one more burst.
        """
        now = self._clock() if now is None else now
        until = now + max(0.0, seconds)
        self._refill(now)
        if until > self._stamp:
            self._tokens = min(self._tokens, 0.0)
            self._stamp = until

    async def acquire(self) -> None:
        """Wait for a token (FIFO); a cancelled waiter returns its token."""
        wait = self.reserve()
        if wait <= 0:
            return
        try:
            await self._sleep(wait)
        except asyncio.CancelledError:
            self.refund()
            raise
