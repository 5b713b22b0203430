"""The Kafka bus: topics, a durable producer, group consumers, dead letters.

Every stage produces with ``acks=all`` and idempotence on, consumes with
automatic commits off, and commits only after the effect of a message is
durable (at-least-once). Messages that cannot be acted on go to the
dead-letters topic with the reason; a consumer never stalls on one.
"""

from __future__ import annotations

import functools
import logging
import random
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from pushrelay.core.events import DeadLetter, encode
from pushrelay.infra.settings import CommonSettings

log = logging.getLogger(__name__)


def guard_connection(conn: AIOKafkaConnection) -> AIOKafkaConnection:
    """Make a write to a connection the broker closed a ``KafkaConnectionError``
    under uvloop too (aiokafka issue 1038, open), for this connection only.

    aiokafka turns an ``OSError`` from the socket write into a connection error
    and recovers; uvloop raises ``RuntimeError`` ("unable to perform operation on
    <TCPTransport closed=True>") instead. That escapes aiokafka's metadata task,
    which dies silently, and every later metadata wait hangs: after a broker
    restart the router stopped routing and the refresher could not stop (found by
    the fault suite, ``kafka_kill_9``). The method is wrapped on the instance, so
    aiokafka itself, and everyone else's clients, are left as they are.
    Idempotent.
    """
    if getattr(conn, "_pushrelay_guarded", False):
        return conn
    send = conn.send

    def guarded(request: Any, expect_response: bool = True) -> Any:
        try:
            return send(request, expect_response)
        except KafkaError:  # aiokafka's errors are RuntimeErrors too: not ours
            raise
        except RuntimeError as err:  # uvloop's closed transport
            conn.close(reason=CloseReason.CONNECTION_BROKEN)
            raise KafkaConnectionError(
                f"Connection at {conn.host}:{conn.port} broken: {err}") from err

    conn.send = guarded
    conn._pushrelay_guarded = True
    return conn


class _GuardedConnections(dict[Any, AIOKafkaConnection]):
    """A client's connection table that guards every connection stored in it."""

    def __setitem__(self, key: Any, conn: AIOKafkaConnection) -> None:
        super().__setitem__(key, guard_connection(conn))


def guarded(client: AIOKafkaClient) -> AIOKafkaClient:
    """Guard every connection ``client`` (one of ours) opens (see :func:`guard_connection`)."""
    if not isinstance(client._conns, _GuardedConnections):
        conns = _GuardedConnections()
        for key, conn in client._conns.items():
            conns[key] = conn
        client._conns = conns
    return client


DEAD_LETTER_PAYLOAD_LIMIT = 64 * 1024


def topic_configs(settings: CommonSettings) -> dict[str, dict[str, str]]:
    """Every topic pushrelay uses, with its configuration."""
    return {
        settings.push_topic: {"retention.ms": str(7 * 24 * 3600 * 1000)},
        settings.refresh_topic: {"retention.ms": str(7 * 24 * 3600 * 1000)},
        settings.dead_letter_topic: {"retention.ms": str(30 * 24 * 3600 * 1000)},
        settings.deliveries_topic: {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(14 * 24 * 3600 * 1000),
            "min.compaction.lag.ms": str(3600 * 1000),
            "segment.ms": str(6 * 3600 * 1000),
        },
    }


def connection_options(settings: CommonSettings) -> dict[str, Any]:
    """How every Kafka client of pushrelay reaches the brokers: bootstrap servers,
    security protocol, TLS context and SASL credentials, as aiokafka arguments.

    Producers, consumers and the admin client all take these, so one setting
    secures every connection. TLS verifies the broker's certificate and host name
    against ``kafka_ca_file`` (or the system trust store); a client certificate
    is presented when ``kafka_cert_file`` is set.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ca_file, certfile=settings.kafka_cert_file,
            keyfile=settings.kafka_key_file,
        )
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password else None,
        )
    return options


async def ensure_topics(settings: CommonSettings) -> None:
    """Create missing topics (idempotent; safe from several replicas at once)."""
    admin = AIOKafkaAdminClient(
        **connection_options(settings),
        request_timeout_ms=int(settings.kafka_request_timeout * 1000),
    )
    guarded(admin._client)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, settings.topic_partitions, settings.topic_replication, topic_configs=cfg)
            for name, cfg in topic_configs(settings).items()
            if name not in existing
        ]
        if not missing:
            return
        try:
            await admin.create_topics(missing)
        except TopicAlreadyExistsError:
            pass
        log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()


def watchdog_timeout(settings: CommonSettings) -> float:
    """Bound on one Kafka client call that has timeouts of its own (a send's ack,
    a commit): if it is reached, the client did not keep its own bound."""
    return 2 * settings.kafka_request_timeout + 5


class KeyPartitioner:
    """Kafka's default partitioning (murmur2 of the key, as the Java client), memoized.

    aiokafka's murmur2 is pure Python (~3 µs for a short key) and our keys repeat
    all the time (a repository for push events, a Warehouse for refresh
    requests), so the hash is cached. Partitions are exactly the default
    partitioner's, so other producers using the same keys agree with us.
    """

    def __init__(self, cache_size: int = 16_384) -> None:
        self._hash = functools.lru_cache(maxsize=cache_size)(murmur2)

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[(self._hash(key) & 0x7FFFFFFF) % len(all_partitions)]


def new_producer(settings: CommonSettings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        **connection_options(settings),
        "partitioner": KeyPartitioner(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "request_timeout_ms": int(settings.kafka_request_timeout * 1000),
        "max_request_size": 2 * 1024 * 1024,
        "client_id": "pushrelay",
    }
    options.update(overrides)
    producer = AIOKafkaProducer(**options)
    guarded(producer.client)
    return producer


def new_consumer(
    settings: CommonSettings, topic: str, group: str, **overrides: Any
) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        **connection_options(settings),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": int(settings.kafka_request_timeout * 1000) + 30_000,
        "max_poll_records": 500,
        # Let the broker gather a little before answering a fetch: under a steady
        # trickle, one fetch per record costs a request each way (measured: a
        # quarter of the router's CPU in socket writes at 200 events/s).
        "fetch_min_bytes": 64 * 1024,
        "fetch_max_wait_ms": 20,
        "fetch_max_bytes": 8 * 1024 * 1024,
        "client_id": group,
    }
    options.update(overrides)
    consumer = AIOKafkaConsumer(topic, **options)
    guarded(consumer._client)
    return consumer


def dead_letter_for(stage: str, reason: str, record: ConsumerRecord[Any, Any] | None = None,
                    payload: bytes | None = None) -> DeadLetter:
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


async def send_dead_letter(
    producer: AIOKafkaProducer, settings: CommonSettings, letter: DeadLetter
) -> None:
    """Publish a dead letter and wait for the broker's ack."""
    key = (letter.key or letter.id).encode()
    await producer.send_and_wait(settings.dead_letter_topic, encode(letter), key=key)
    log.warning(
        "dead-lettered message", extra={"stage": letter.stage, "reason": letter.reason,
                                        "topic": letter.topic, "offset": letter.offset},
    )
