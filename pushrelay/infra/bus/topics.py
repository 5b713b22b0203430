"""The topics pushrelay uses, whichever bus carries them (docs/bus.md)."""

from __future__ import annotations

from pushrelay.infra.settings import CommonSettings

DAY_MS = 24 * 3600 * 1000


def topic_configs(settings: CommonSettings) -> dict[str, dict[str, str]]:
    """Every topic pushrelay uses, with its configuration (Kafka topic configs;
    the embedded bus reads the names and the retentions)."""
    return {
        settings.push_topic: {"retention.ms": str(7 * DAY_MS)},
        settings.refresh_topic: {"retention.ms": str(7 * DAY_MS)},
        settings.dead_letter_topic: {"retention.ms": str(30 * DAY_MS)},
        settings.deliveries_topic: {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(14 * DAY_MS),
            "min.compaction.lag.ms": str(3600 * 1000),
            "segment.ms": str(6 * 3600 * 1000),
        },
    }


def watchdog_timeout(settings: CommonSettings) -> float:
    """Bound on one bus call that has timeouts of its own (a send's ack, a
    commit): if it is reached, the client did not keep its own bound."""
    return 2 * settings.kafka_request_timeout + 5
