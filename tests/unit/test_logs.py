"""Transient start-up conditions of Kafka are one INFO line of ours, never ERROR."""

from __future__ import annotations

import io
import logging

import orjson

from pushrelay.infra import logs
from pushrelay.infra.logs import TransientStartup

COORDINATOR = ("Group Coordinator Request failed: %s",
               "[Error 15] GroupCoordinatorNotAvailableError")


def record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args or None, None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_transient_error_becomes_one_info_line_of_ours() -> None:
    clock = Clock()
    noise = TransientStartup(clock=clock)
    first = record("aiokafka.consumer.group_coordinator", logging.ERROR, *COORDINATOR)
    assert noise.filter(first)
    assert (first.name, first.levelname) == ("pushrelay.kafka", "INFO")
    assert "GroupCoordinatorNotAvailableError" in first.getMessage()
    clock.now += 1
    again = record("aiokafka.consumer.group_coordinator", logging.ERROR, *COORDINATOR)
    assert not noise.filter(again)  # dropped: said once already
    other = record("aiokafka.producer.sender", logging.WARNING,
                   "Got error produce response: %s", "[Error 5] LeaderNotAvailableError")
    assert noise.filter(other) and other.levelname == "INFO"  # a different condition: once
    dead = [record("aiokafka.consumer.group_coordinator", logging.WARNING,
                   "Marking the coordinator dead (node %s)for group %s.", 1, g)
            for g in ("router", "refresher", "router")]
    assert [noise.filter(r) for r in dead] == [True, False, False]
    assert dead[0].levelname == "INFO"


def test_a_condition_that_outlasts_the_grace_period_is_a_real_failure() -> None:
    clock = Clock()
    noise = TransientStartup(grace=60, clock=clock)
    assert noise.filter(record("aiokafka.consumer.group_coordinator", logging.ERROR,
                               *COORDINATOR))
    clock.now += 61
    late = record("aiokafka.consumer.group_coordinator", logging.ERROR, *COORDINATOR)
    assert noise.filter(late) and late.levelname == "ERROR"


def test_real_failures_and_other_loggers_pass_unchanged() -> None:
    noise = TransientStartup(clock=Clock())
    for rec in (
        record("aiokafka.client", logging.ERROR, 'Unable connect to "%s:%s": %s',
               "127.0.0.1", 9092, "refused"),
        record("aiokafka.consumer.group_coordinator", logging.ERROR,
               "Attempt to join group failed due to fatal error: %s", "InvalidGroupIdError"),
        record("router.service", logging.ERROR, "GroupCoordinatorNotAvailableError in my text"),
    ):
        name, level = rec.name, rec.levelname
        assert noise.filter(rec) and (rec.name, rec.levelname) == (name, level)


def test_a_level_above_info_drops_it_entirely() -> None:
    noise = TransientStartup(level=logging.WARNING, clock=Clock())
    assert not noise.filter(record("aiokafka.consumer.group_coordinator", logging.ERROR,
                                   *COORDINATOR))


def test_configure_installs_it() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", "json")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        log = logging.getLogger("aiokafka.consumer.group_coordinator")
        for _ in range(3):
            log.error(*COORDINATOR)
        lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
        assert [(d["level"], d["logger"]) for d in lines] == [("info", "pushrelay.kafka")]
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
