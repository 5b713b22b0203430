"""The bus: the interface (:mod:`.api`) and its implementations (:mod:`.kafka`,
:mod:`.embedded`); see docs/bus.md.

Transitional: the Kafka helpers are still re-exported here under their old names
while the services move onto the interface.
"""

from pushrelay.infra.bus import api  # noqa: F401
from pushrelay.infra.bus.kafka import *  # noqa: F403
from pushrelay.infra.bus.kafka import (  # noqa: F401
    DEAD_LETTER_PAYLOAD_LIMIT,
    KeyPartitioner,
    _GuardedConnections,
    connection_options,
    dead_letter_for,
    ensure_topics,
    guard_connection,
    guarded,
    new_consumer,
    new_producer,
    send_dead_letter,
    topic_configs,
    watchdog_timeout,
)
