"""Dead letters: what a stage cannot act on, kept with the reason (any bus)."""

from __future__ import annotations

import logging

from pushrelay.core.events import DeadLetter, encode
from pushrelay.infra.bus.api import Producer, Record
from pushrelay.infra.settings import CommonSettings

log = logging.getLogger(__name__)

#: Bytes of the original payload a dead letter keeps.
DEAD_LETTER_PAYLOAD_LIMIT = 64 * 1024


def dead_letter_for(stage: str, reason: str, record: Record | None = None,
                    payload: bytes | None = None) -> DeadLetter:
    """The dead letter for ``record`` (or for a ``payload`` that was never a
    record), with where it came from and the start of its payload."""
    raw = payload if payload is not None else (record.value if record is not None else b"")
    text = (raw or b"")[:DEAD_LETTER_PAYLOAD_LIMIT].decode("utf-8", errors="replace")
    key = record.key if record is not None else None
    return DeadLetter(
        stage=stage,
        reason=reason[:1000] or "unknown",
        topic=record.topic if record is not None else None,
        partition=record.partition if record is not None else None,
        offset=record.offset if record is not None else None,
        key=key.decode("utf-8", errors="replace") if isinstance(key, bytes) else None,
        payload=text,
    )


async def send_dead_letter(producer: Producer, settings: CommonSettings,
                           letter: DeadLetter) -> None:
    """Publish a dead letter and wait until it is durable (raises ``BusError``)."""
    key = (letter.key or letter.id).encode()
    await (await producer.send(settings.dead_letter_topic, encode(letter), key=key))
    log.warning(
        "dead-lettered message", extra={"stage": letter.stage, "reason": letter.reason,
                                        "topic": letter.topic, "offset": letter.offset},
    )
