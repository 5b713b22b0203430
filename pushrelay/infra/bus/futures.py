"""One future settling as another does (the buses' send futures)."""

from __future__ import annotations

import asyncio
from typing import Any


def follow(source: asyncio.Future[Any],
           target: asyncio.Future[None] | None = None) -> asyncio.Future[None]:
    """``target`` (a new future when None) settles as ``source`` does: cancelled,
    with its error, or with None for whatever it resolved to. Returns ``target``."""
    if target is None:
        target = asyncio.get_running_loop().create_future()
    followed = target

    def done(future: asyncio.Future[Any]) -> None:
        if followed.done():
            return
        if future.cancelled():
            followed.cancel()
        elif (error := future.exception()) is not None:
            followed.set_exception(error)
        else:
            followed.set_result(None)

    source.add_done_callback(done)
    return followed
