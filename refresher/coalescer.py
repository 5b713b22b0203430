"""Per-Warehouse coalescing: a leading-edge patch, then one trailing patch.

The rules, for one key (a Warehouse), with ``interval`` the minimum interval:

* A request is *satisfied* only by a patch that **started after it arrived**.
  Requests wait in ``pending`` until a patch starts; the patch takes all of them.
* Leading edge: a request for a key with no patch in flight and no patch
  started in the last ``interval`` is due at once.
* Trailing edge: requests arriving within ``interval`` of the last patch start
  (or while a patch is in flight) are due together at ``last start + interval``
  (and never before the in-flight patch finished). A burst of any size within
  one interval costs the leading patch plus one trailing patch.
* A failed attempt hands its requests back; they are due again at the retry
  time the caller chose (and not before ``last good start + interval``).

The flow the scheduler follows: :meth:`add` requests; :meth:`pop_due` claims a
due key (it counts as in flight from then on); :meth:`start` takes its pending
requests when the patch actually begins (after waiting for the write budget,
so requests arriving meanwhile ride along); then :meth:`succeeded` or
:meth:`failed`. Pure: time is always passed in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(slots=True)
class _Slot(Generic[T]):
    pending: list[T] = field(default_factory=list)
    last_start: float | None = None  # start of the last successful patch
    not_before: float = float("-inf")  # earliest start of the next patch
    in_flight: bool = False  # claimed or patching
    failures: int = 0  # consecutive failed attempts
    attempt_start: float | None = None


class Coalescer(Generic[K, T]):
    def __init__(self, interval: float) -> None:
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.interval = interval
        self._slots: dict[K, _Slot[T]] = {}
        self._heap: list[tuple[float, int, K]] = []  # (due, seq, key); lazily invalidated
        self._seq = itertools.count()

    # ---- bookkeeping ---------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slots)

    def pending(self, key: K) -> int:
        slot = self._slots.get(key)
        return 0 if slot is None else len(slot.pending)

    def pending_total(self) -> int:
        return sum(len(s.pending) for s in self._slots.values())

    def in_flight(self, key: K) -> bool:
        slot = self._slots.get(key)
        return slot is not None and slot.in_flight

    def failures(self, key: K) -> int:
        slot = self._slots.get(key)
        return 0 if slot is None else slot.failures

    def _schedule(self, key: K, slot: _Slot[T]) -> None:
        if slot.pending and not slot.in_flight:
            heapq.heappush(self._heap, (slot.not_before, next(self._seq), key))

    def _valid(self, due: float, key: K) -> bool:
        slot = self._slots.get(key)
        return (slot is not None and bool(slot.pending) and not slot.in_flight
                and slot.not_before == due)

    # ---- the flow ------------------------------------------------------------
    def add(self, key: K, token: T, now: float) -> None:
        """A request for ``key`` arrived at ``now``."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        first = not slot.pending
        slot.pending.append(token)
        if first and not slot.in_flight:
            if slot.last_start is not None:
                slot.not_before = max(slot.not_before, slot.last_start + self.interval)
            self._schedule(key, slot)

    def next_due(self) -> float | None:
        """When the earliest key becomes due (maybe in the past), or ``None``."""
        while self._heap and not self._valid(self._heap[0][0], self._heap[0][2]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> K | None:
        """Claim the earliest key due at ``now``; it is in flight until settled."""
        due = self.next_due()
        if due is None or due > now:
            return None
        _, _, key = heapq.heappop(self._heap)
        self._slots[key].in_flight = True
        return key

    def start(self, key: K, now: float) -> list[T]:
        """The claimed patch of ``key`` begins now: it takes every pending request."""
        slot = self._slots.get(key)
        if slot is None:
            return []
        slot.in_flight = True
        slot.attempt_start = now
        taken, slot.pending = slot.pending, []
        return taken

    def release(self, key: K) -> None:
        """Give up a claim without patching (e.g. nothing was pending after all)."""
        slot = self._slots.get(key)
        if slot is not None:
            slot.in_flight = False
            self._schedule(key, slot)

    def succeeded(self, key: K, now: float) -> None:
        """The patch of ``key`` succeeded: its requests are satisfied."""
        slot = self._slots.get(key)
        if slot is None:
            return
        slot.in_flight = False
        slot.failures = 0
        start = slot.attempt_start if slot.attempt_start is not None else now
        slot.last_start = start
        slot.not_before = start + self.interval
        self._schedule(key, slot)

    def settled(self, key: K) -> None:
        """The patch of ``key`` ended with nothing to retry (dropped or rejected).

        Requests that arrived meanwhile are due one interval after this attempt
        started, like a trailing patch: the next attempt tells whether the
        Warehouse came back (or the permission was granted).
        """
        slot = self._slots.get(key)
        if slot is None:
            return
        slot.in_flight = False
        slot.failures = 0
        if slot.attempt_start is not None:
            slot.not_before = slot.attempt_start + self.interval
        self._schedule(key, slot)

    def failed(self, key: K, tokens: list[T], retry_at: float) -> int:
        """The patch failed transiently: hand ``tokens`` back, due at ``retry_at``.

        Returns the number of consecutive failures (for the backoff).
        """
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        slot.in_flight = False
        slot.failures += 1
        slot.pending = tokens + slot.pending
        floor = slot.last_start + self.interval if slot.last_start is not None else retry_at
        slot.not_before = max(retry_at, floor)
        self._schedule(key, slot)
        return slot.failures

    def discard(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove and return the pending requests matching ``predicate``."""
        removed: list[T] = []
        for slot in self._slots.values():
            keep = [t for t in slot.pending if not predicate(t)]
            if len(keep) != len(slot.pending):
                removed += [t for t in slot.pending if predicate(t)]
                slot.pending = keep
        return removed

    def prune(self, now: float) -> int:
        """Forget idle keys whose window has passed (a new request is a leading edge)."""
        idle = [k for k, s in self._slots.items()
                if not s.pending and not s.in_flight and now >= s.not_before]
        for key in idle:
            del self._slots[key]
        return len(idle)
