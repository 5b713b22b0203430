"""How Quay.io delivers a repository's notification: the state machine, with no I/O.

Facts (SPEC §4, issue 15): a delivery succeeds on any 2xx; anything else, or no
answer within 10 s, is a failed delivery, retried once :attr:`QuayPolicy.retry_after`
(30 s) later; after :attr:`QuayPolicy.disable_after` (3) *consecutive* failed
deliveries of one notification, Quay disables it — no more deliveries for that
repository until a person re-enables it. A success resets the count.

One :class:`Notifications` holds the state of every repository's notification
(Quay has one notification per repository and event kind). Time is whatever the
caller passes in (``now``, seconds on any monotonic clock): the load generator
gives it ``time.monotonic()``, the unit test a fake clock. Contract:

* :meth:`Notifications.push` — a new event for ``repo``: the :class:`Attempt` to
  send now, or ``None`` when the notification is disabled (counted in
  :attr:`Notifications.suppressed`).
* :meth:`Notifications.outcome` — the result of an attempt; a failure returns
  the retry scheduled for ``now + retry_after`` (or ``None`` when this failure
  disabled the notification, or it already was disabled).
* :meth:`Notifications.due` — the scheduled retries whose time has come, removed
  from the schedule, in due order. Retries of a notification disabled meanwhile
  are dropped, never sent.

Attempts of one notification may be in flight together (Quay's workers do not
serialize a repository's events); outcomes count in the order they arrive.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

#: Quay's delivery timeout, s.
DELIVERY_TIMEOUT = 10.0
#: Quay's fixed pause before it retries a failed delivery, s.
RETRY_AFTER = 30.0
#: Consecutive failed deliveries after which Quay disables a notification.
DISABLE_AFTER = 3


@dataclass(frozen=True)
class QuayPolicy:
    retry_after: float = RETRY_AFTER
    disable_after: int = DISABLE_AFTER

    def __post_init__(self) -> None:
        if self.retry_after < 0 or self.disable_after < 1:
            raise ValueError(f"bad policy {self}")


@dataclass(frozen=True, order=True)
class Attempt:
    """Delivery ``attempt`` (0 = the first) of push ``p`` to ``repo``'s notification."""

    p: int
    attempt: int
    repo: str


@dataclass
class _Notification:
    failures: int = 0  # consecutive
    disabled_at: float | None = None


@dataclass
class Notifications:
    policy: QuayPolicy = field(default_factory=QuayPolicy)
    #: Pushes not sent at all because their notification was disabled.
    suppressed: int = 0
    #: Retries dropped because their notification was disabled before they were due.
    dropped_retries: int = 0
    _state: dict[str, _Notification] = field(default_factory=dict)
    _retries: list[tuple[float, Attempt]] = field(default_factory=list)

    def _of(self, repo: str) -> _Notification:
        return self._state.setdefault(repo, _Notification())

    def enabled(self, repo: str) -> bool:
        return self._of(repo).disabled_at is None

    @property
    def disabled(self) -> dict[str, float]:
        """Repository → when its notification was disabled."""
        return {r: n.disabled_at for r, n in self._state.items() if n.disabled_at is not None}

    def push(self, p: int, repo: str) -> Attempt | None:
        if not self.enabled(repo):
            self.suppressed += 1
            return None
        return Attempt(p, 0, repo)

    def outcome(self, attempt: Attempt, ok: bool, now: float) -> Attempt | None:
        state = self._of(attempt.repo)
        if state.disabled_at is not None:
            return None  # an answer still in flight when it was disabled: no effect
        if ok:
            state.failures = 0
            return None
        state.failures += 1
        if state.failures >= self.policy.disable_after:
            state.disabled_at = now
            return None
        retry = Attempt(attempt.p, attempt.attempt + 1, attempt.repo)
        heapq.heappush(self._retries, (now + self.policy.retry_after, retry))
        return retry

    def due(self, now: float) -> list[Attempt]:
        ready = []
        while self._retries and self._retries[0][0] <= now:
            _, retry = heapq.heappop(self._retries)
            if self.enabled(retry.repo):
                ready.append(retry)
            else:
                self.dropped_retries += 1
        return ready

    def next_due(self) -> float | None:
        """When the earliest scheduled retry is due (None: nothing scheduled)."""
        return self._retries[0][0] if self._retries else None

    @property
    def scheduled(self) -> int:
        return len(self._retries)


def ok_status(status: int | None) -> bool:
    """Quay's rule: any 2xx is a success; everything else (and no answer) a failure."""
    return status is not None and 200 <= status < 300
