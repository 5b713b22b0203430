"""One service lifecycle: idempotent start/stop, crash supervision, a shutdown budget.

Every service derives from :class:`ServiceBase` and writes only ``_start()``,
``_stop(deadline)``, ``_readiness()`` and, if it can run degraded,
``_degraded()``. The base class guarantees (docs/architecture.md, "Lifecycle"):

* ``start()`` and ``stop()`` are idempotent and symmetric: a second call is a
  no-op, ``stop()`` before ``start()`` means the service never starts, and
  concurrent ``stop()`` calls share one shutdown.
* If ``_start()`` raises (or is cancelled) half-way, ``_stop()`` runs at once and
  the exception propagates: nothing it created is left behind. ``_stop()`` must
  therefore tolerate a partially started service (every resource may be None).
* Background work runs in tasks made by :meth:`ServiceBase.supervise` (or handed
  to :meth:`ServiceBase.watch`): a task that dies while the service is running
  sets ``crashed`` (``/healthz`` fails, the process exits non-zero and is
  restarted); supervised tasks still alive when ``_stop()`` returns are
  cancelled and awaited.
* ``stop(deadline)`` gets the one shutdown budget from the runtime as a
  :class:`Deadline`; phases of ``_stop()`` take shares of what remains, so the
  sum never exceeds the budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

log = logging.getLogger(__name__)

State = Literal["new", "starting", "running", "stopping", "stopped"]


class Deadline:
    """A point in (loop) time by which a shutdown must be over."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or asyncio.get_running_loop().time
        self._at = self._clock() + max(0.0, seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._at - self._clock())

    def share(self, fraction: float, *, at_most: float | None = None) -> float:
        """``fraction`` of the time left (capped at ``at_most``): one phase's budget."""
        seconds = self.remaining() * fraction
        return seconds if at_most is None else min(seconds, at_most)

    def expired(self) -> bool:
        return self.remaining() <= 0


class ServiceBase:
    """The lifecycle every service shares (see the module docstring)."""

    name: str = "service"

    def __init__(self, shutdown_timeout: float) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.crashed = asyncio.Event()
        self._state: State = "new"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shutdown_task: asyncio.Task[None] | None = None

    # ---- what subclasses write ------------------------------------------------
    async def _start(self) -> None:
        """Create clients and start background work (may raise half-way)."""

    async def _stop(self, deadline: Deadline) -> None:
        """Drain, commit, close; tolerate a partially started service."""

    def _readiness(self) -> str | None:
        """Why the running service is not ready, or None."""
        return None

    def _degraded(self) -> str | None:
        """How the running (and ready) service is degraded, or None (``/readyz``'s
        body says it, the status stays 200: e.g. the ingress while it spools)."""
        return None

    # ---- the lifecycle --------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def running(self) -> bool:
        return self._state == "running"

    async def start(self) -> None:
        if self._state != "new":
            return
        self._state = "starting"
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        if self._state == "starting":
            self._state = "running"

    async def stop(self, deadline: Deadline | None = None) -> None:
        if self._shutdown_task is None:
            if self._state == "new":
                self._state = "stopped"
                return
            self._shutdown_task = asyncio.create_task(
                self._shutdown(deadline or Deadline(self.shutdown_timeout)),
                name=f"{self.name}:stop")
        # Shielded: a caller giving up (its own timeout) does not abort the shutdown.
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, deadline: Deadline) -> None:
        self._state = "stopping"
        try:
            await self._stop(deadline)
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._state = "stopped"

    def readiness(self) -> str | None:
        if self._state in ("new", "starting"):
            return "starting"
        if self._state != "running":
            return "stopping"
        return self._readiness()

    def degraded(self) -> str | None:
        """A note on a running service's degraded state, or None."""
        return self._degraded() if self._state == "running" else None

    # ---- supervision ----------------------------------------------------------
    def supervise(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a background task of this service (see :meth:`watch`)."""
        return self.watch(asyncio.create_task(coro, name=name))

    def watch(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Own ``task``: its death while running crashes the service; stop cancels it."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._state in ("stopping", "stopped"):
            return
        error = task.exception()
        log.error("background task ended; the service is unhealthy", exc_info=error,
                  extra={"service": self.name, "task": task.get_name()})
        self.crashed.set()


async def close_all(*closers: tuple[str, Callable[[], Coroutine[Any, Any, Any]] | None],
                    within: float) -> None:
    """Close clients in order, each bounded by what is left of ``within``; errors logged.

    Used at the end of a shutdown: a client that cannot close cleanly (its broker
    is gone) must not keep the others open.
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + within
    for what, close in closers:
        if close is None:
            continue
        try:
            async with asyncio.timeout(max(0.1, until - loop.time())):
                await close()
        except TimeoutError:
            log.warning("%s did not close in time", what)
        except Exception:  # noqa: BLE001 - closing anyway: the process is going away
            log.exception("error closing %s", what)
