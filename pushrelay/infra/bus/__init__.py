"""The bus: the interface (:mod:`.api`) and its implementations (:mod:`.kafka`,
:mod:`.embedded`); see docs/bus.md.

:func:`open_bus` is the one place that picks the implementation
(``PUSHRELAY_BUS``); services are handed the result and never ask which one
they got. Bus-independent helpers: :mod:`.topics` (names, configs, the watchdog
bound) and :mod:`.letters` (dead letters).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from pushrelay.infra.bus import api
from pushrelay.infra.settings import CommonSettings

__all__ = ["api", "open_bus", "opened_bus"]


def open_bus(settings: CommonSettings) -> api.Bus:
    """The bus ``settings.bus`` names, not started yet."""
    if settings.bus == "embedded":
        # Imported here: only an embedded process needs it (and its SQLite store).
        from pushrelay.infra.bus.embedded import EmbeddedBus  # type: ignore[import-not-found,unused-ignore]

        bus: api.Bus = EmbeddedBus(settings)
        return bus
    from pushrelay.infra.bus.kafka import KafkaBus

    return KafkaBus(settings)


@contextlib.asynccontextmanager
async def opened_bus(settings: CommonSettings) -> AsyncIterator[api.Bus]:
    """:func:`open_bus`, started for the block and stopped after it (CLI commands)."""
    bus = open_bus(settings)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()
