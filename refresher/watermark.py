"""Per-partition commit watermarks: commit up to the lowest unsatisfied offset.

Each consumed record is *tracked* (its offset, in fetch order) and later marked
*done* once its effect is durable: the Warehouse was patched by a patch that
started after the record arrived, or the request was dropped (404) or
dead-lettered. The committable offset of a partition is the lowest tracked
offset not yet done, or one past the last tracked offset when all are done.
So a crash at any instant loses nothing: everything at or above the committed
offset is consumed again.

A partition assignment gets a new *epoch*; tickets from an earlier assignment
(the partition was revoked while their patch was in flight) are ignored.
Pure: no Kafka, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True)
class Ticket(Generic[P]):
    """One tracked record: what :meth:`Watermarks.done` needs."""

    partition: P
    offset: int
    epoch: int


@dataclass
class _Partition:
    epoch: int
    outstanding: deque[int] = field(default_factory=deque)  # tracked, in order
    done: set[int] = field(default_factory=set)  # done but not yet at the front
    last: int | None = None  # highest offset tracked
    committed: int | None = None  # last offset handed to commit

    def committable(self) -> int | None:
        if self.outstanding:
            return self.outstanding[0]
        return None if self.last is None else self.last + 1


class Watermarks(Generic[P]):
    def __init__(self) -> None:
        self._parts: dict[P, _Partition] = {}
        self._epochs = 0

    def assign(self, partition: P) -> None:
        """Start tracking ``partition`` afresh (a new epoch)."""
        self._epochs += 1
        self._parts[partition] = _Partition(self._epochs)

    def revoke(self, partition: P) -> None:
        """Forget ``partition``: its outstanding tickets become stale."""
        self._parts.pop(partition, None)

    def partitions(self) -> list[P]:
        return list(self._parts)

    def track(self, partition: P, offset: int) -> Ticket[P] | None:
        """Track a consumed record. ``None``: already seen in this epoch (skip it)."""
        part = self._parts.get(partition)
        if part is None:
            self.assign(partition)
            part = self._parts[partition]
        if part.last is not None and offset <= part.last:
            return None  # a re-fetch: the first copy is (or was) handled
        part.last = offset
        part.outstanding.append(offset)
        return Ticket(partition, offset, part.epoch)

    def owns(self, ticket: Ticket[P]) -> bool:
        part = self._parts.get(ticket.partition)
        return part is not None and part.epoch == ticket.epoch

    def done(self, ticket: Ticket[P]) -> None:
        """Mark a record satisfied. Stale or repeated tickets are ignored."""
        part = self._parts.get(ticket.partition)
        if part is None or part.epoch != ticket.epoch:
            return
        if not part.outstanding or ticket.offset < part.outstanding[0]:
            return  # already done
        part.done.add(ticket.offset)
        while part.outstanding and part.outstanding[0] in part.done:
            part.done.discard(part.outstanding.popleft())

    def done_all(self, tickets: Iterable[Ticket[P]]) -> None:
        for ticket in tickets:
            self.done(ticket)

    def committable(self, partition: P) -> int | None:
        part = self._parts.get(partition)
        return None if part is None else part.committable()

    def outstanding(self, partition: P | None = None) -> int:
        """Records tracked and not yet done (in one partition, or in all)."""
        parts = self._parts.values() if partition is None else [
            p for k, p in self._parts.items() if k == partition]
        return sum(len(p.outstanding) - len(p.done) for p in parts)

    def to_commit(self, partitions: Iterable[P] | None = None) -> dict[P, int]:
        """Offsets that moved since :meth:`committed` last recorded them."""
        keys = self._parts if partitions is None else partitions
        out: dict[P, int] = {}
        for key in keys:
            part = self._parts.get(key)
            if part is None:
                continue
            offset = part.committable()
            if offset is not None and offset != part.committed:
                out[key] = offset
        return out

    def committed(self, offsets: dict[P, int]) -> None:
        """Record that ``offsets`` were committed to the broker."""
        for key, offset in offsets.items():
            part = self._parts.get(key)
            if part is not None:
                part.committed = offset
