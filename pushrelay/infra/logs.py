"""Logging: one JSON object per line, with ids passed as ``extra``.

Callers log ``log.info("accepted push", extra={"delivery": id, "receiver": name})``.
Nothing logs secrets or full receiver paths: receivers are named and at most the
first 8 hex characters of a path hash are shown (:func:`short_hash`).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def short_hash(path_or_hash: str) -> str:
    """The first 8 hex characters of a receiver hash: safe to log."""
    return path_or_hash.rstrip("/").rsplit("/", 1)[-1][:8]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        return f"{base} {extras}" if extras else base


#: Retriable Kafka errors a broker answers while it is still electing leaders
#: and loading the group coordinator (a fresh broker, a new topic): aiokafka logs
#: some of them at ERROR and retries by itself.
TRANSIENT_KAFKA_ERRORS = (
    "GroupCoordinatorNotAvailableError", "CoordinatorNotAvailableError",
    "NotCoordinatorForGroupError", "NotCoordinatorError",
    "GroupLoadInProgressError", "CoordinatorLoadInProgressError",
    "LeaderNotAvailableError", "NotLeaderForPartitionError", "NotLeaderOrFollowerError",
    "UnknownTopicOrPartitionError",
    # What the group coordinator client logs (WARNING) after each of the above.
    "Marking the coordinator dead",
)
_TRANSIENT = re.compile(r"\b(" + "|".join(map(re.escape, TRANSIENT_KAFKA_ERRORS)) + r")\b")


class TransientStartup(logging.Filter):
    """Turns a dependency's transient start-up complaints into one INFO line of ours.

    A record from the ``aiokafka`` loggers naming one of
    :data:`TRANSIENT_KAFKA_ERRORS` is dropped; the first of each kind becomes one
    INFO record of ``pushrelay.kafka`` (if ``level`` lets INFO through). Should
    the same condition still be reported ``grace`` seconds after it was first
    seen, it is no longer a start-up condition: its records pass unchanged.
    Every other record passes unchanged. Install it on a handler, so records of
    every ``aiokafka.*`` logger reach it.
    """

    def __init__(self, level: int = logging.INFO, grace: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._level, self._grace, self._clock = level, grace, clock
        self._first_seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        found = _TRANSIENT.search(record.getMessage())
        if found is None:
            return True
        condition, now = found.group(1), self._clock()
        first = self._first_seen.get(condition)
        if first is not None:
            # Still within the grace period: dropped. Past it: a real failure,
            # shown as aiokafka reported it.
            return now - first > self._grace
        self._first_seen[condition] = now
        if self._level > logging.INFO:
            return False
        record.name, record.levelno, record.levelname = "pushrelay.kafka", logging.INFO, "INFO"
        record.msg = (f"Kafka is not ready yet ({condition}, normal while a broker "
                      f"starts); the client retries")
        record.args = None
        record.__dict__["source"] = found.string[:200]
        return True


def configure(level: str = "INFO", fmt: str = "json") -> None:
    # Neither format shows the caller's file/line, thread or process: do not
    # compute them for every record (a third of the cost of a log call).
    logging._srcfile = None  # the documented switch (Logging HOWTO, "Optimization")
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    handler.addFilter(TransientStartup(root.level))
    for noisy in ("aiokafka", "kafka", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
