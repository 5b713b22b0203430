"""The Kafka bus: :class:`KafkaBus`, the :mod:`pushrelay.infra.bus.api` over aiokafka.

Every producer sends with ``acks=all`` and idempotence on, every consumer
commits explicitly (automatic commits off), so a stage commits only after the
effect of a record is durable (at-least-once). aiokafka's errors are translated
here, once, into :class:`~pushrelay.infra.bus.api.BusError` subclasses that
carry their retry policy (:func:`translate`); nothing above this module sees an
aiokafka type.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka import TopicPartition as KafkaPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    ProducerClosed,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from pushrelay.infra.bus.api import (
    BusError,
    BusKind,
    BusTimeout,
    BusUnavailable,
    CommitRefused,
    Rebalance,
    Record,
    RecordRejected,
    TopicPartition,
)
from pushrelay.infra.bus.linger import Gather
from pushrelay.infra.bus.topics import topic_configs
from pushrelay.infra.settings import CommonSettings

log = logging.getLogger(__name__)

#: Producers' default linger (ms), across partitions (bus/linger.py): a little
#: batching for the stages' bursts.
DEFAULT_LINGER_MS = 5
#: A linger window that holds this many records flushes at once (Kafka's
#: ``batch.size`` beside ``linger.ms``; measured in bus/linger.py: 8 and 16
#: both lift a 32-connection client from 3,700 to 8,000 req/s on the ingress).
LINGER_MAX_RECORDS = 16
#: A readiness probe's bound (s), at most the request timeout.
PROBE_TIMEOUT = 5.0
#: How a consumer fetches while records flow: the broker gathers up to 64 KiB or
#: ``PUSHRELAY_FETCH_MAX_WAIT`` (default 20 ms) before answering (one fetch per
#: few records, not one per record).
BUSY_FETCH = (64 * 1024, 20)  # (fetch_min_bytes, fetch_max_wait_ms) by default
#: ... and after a fetch that brought nothing: the broker answers at the first
#: byte, or after 500 ms. An idle consumer then fetches twice a second instead of
#: 50 times (measured: router and refresher ~5 % of a core each at idle, the
#: broker ~19 %), and the first record after a pause is answered at once.
IDLE_FETCH = (1, 500)


# ---- error translation ---------------------------------------------------------

def translate(error: BaseException, *, produce: bool = False, commit: bool = False) -> BusError:
    """The :class:`BusError` for an aiokafka (or socket) error, with its retry policy.

    * ``KafkaTimeoutError`` → :class:`BusTimeout`, retriable (aiokafka marks its
      own timeouts non-retriable; for us a missing answer is exactly what to retry);
    * connection errors, ``OSError``, a closed producer → :class:`BusUnavailable`;
    * on a commit, ``CommitFailedError`` / ``IllegalStateError`` (the partitions
      went to another member) → :class:`CommitRefused`;
    * on a send, an error aiokafka marks non-retriable (``MessageSizeTooLarge``,
      an unauthorized topic) → :class:`RecordRejected`;
    * any other retriable ``KafkaError`` → :class:`BusUnavailable`; any other
      non-retriable one → a :class:`BusError` with ``retriable`` False.
    """
    text = f"{type(error).__name__}: {error}"
    translated: BusError
    if isinstance(error, KafkaTimeoutError | asyncio.TimeoutError):
        translated = BusTimeout(text)
    elif commit and isinstance(error, CommitFailedError | IllegalStateError):
        translated = CommitRefused(text)
    elif isinstance(error, KafkaConnectionError | ProducerClosed | OSError):
        translated = BusUnavailable(text)
    elif isinstance(error, KafkaError) and error.retriable:
        translated = BusUnavailable(text)
    elif produce:
        translated = RecordRejected(text)
    else:
        translated = BusError(text)
        translated.retriable = False
    return translated


@contextlib.contextmanager
def translated(*, produce: bool = False, commit: bool = False) -> Iterator[None]:
    """Raise aiokafka's errors (and socket errors) as :func:`translate` says."""
    try:
        yield
    except BusError:
        raise
    except (KafkaError, OSError) as exc:
        raise translate(exc, produce=produce, commit=commit) from exc


def _resolved(source: asyncio.Future[Any]) -> asyncio.Future[None]:
    """A future that resolves (to None) with ``source``, or raises its error translated."""
    target: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(future: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if future.cancelled():  # the producer was stopped before the ack
            target.set_exception(BusUnavailable("send abandoned: the producer stopped"))
        elif (error := future.exception()) is not None:
            target.set_exception(translate(error, produce=True)
                                 if isinstance(error, KafkaError | OSError) else error)
        else:
            target.set_result(None)

    source.add_done_callback(done)
    return target


# ---- connections -----------------------------------------------------------------

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
    """An aiokafka producer as every stage sends: ``acks=all``, idempotent,
    guarded connections, Kafka's partitioning (``overrides``: aiokafka options)."""
    options: dict[str, Any] = {
        **connection_options(settings),
        "partitioner": KeyPartitioner(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": DEFAULT_LINGER_MS,
        "request_timeout_ms": int(settings.kafka_request_timeout * 1000),
        "max_request_size": 2 * 1024 * 1024,
        "client_id": "pushrelay",
    }
    options.update(overrides)
    producer = AIOKafkaProducer(**options)
    guarded(producer.client)
    return producer


def new_consumer(
    settings: CommonSettings, topic: str, group: str,
    listener: ConsumerRebalanceListener | None = None, **overrides: Any,
) -> AIOKafkaConsumer:
    """An aiokafka group member subscribed to ``topic``: explicit commits only,
    from the earliest record without a commit, fetches tuned for trickles."""
    options: dict[str, Any] = {
        **connection_options(settings),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": int(settings.kafka_request_timeout * 1000) + 30_000,
        "max_poll_records": 500,
        # Let the broker gather a little before answering a fetch: under a steady
        # trickle, one fetch per record costs a request each way (measured: a
        # quarter of the router's CPU in socket writes at 200 events/s). While
        # nothing comes, :func:`adaptive_fetch` switches to IDLE_FETCH.
        "fetch_min_bytes": BUSY_FETCH[0],
        "fetch_max_wait_ms": round(settings.fetch_max_wait * 1000),
        "fetch_max_bytes": 8 * 1024 * 1024,
        "client_id": group,
    }
    options.update(overrides)
    consumer = AIOKafkaConsumer(**options)
    consumer.subscribe([topic], listener=listener)
    guarded(consumer._client)
    return consumer



def adaptive_fetch(consumer: AIOKafkaConsumer) -> bool:
    """Fetch as configured (:data:`BUSY_FETCH`) after a fetch that brought
    records, with :data:`IDLE_FETCH` after one that did not (call after ``start()``).

    aiokafka sends one fetch request at a time per broker and builds each one
    from its fetcher's ``_fetch_min_bytes`` / ``_fetch_max_wait_ms``, so setting
    them after each answer decides the next request. Under load every fetch
    brings records (busy settings, as before); an idle consumer's fetches wait
    on the broker instead of returning empty every 20 ms. Latency is never
    worse: an idle fetch answers at the first byte. Returns False (and changes
    nothing) if this aiokafka's fetcher does not look as expected.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    original = getattr(fetcher, "_proc_fetch_request", None)
    if fetcher is None or original is None or not all(
            hasattr(fetcher, a) for a in ("_fetch_min_bytes", "_fetch_max_wait_ms")):
        log.warning("aiokafka's fetcher has changed: idle fetches stay as busy ones")
        return False
    if getattr(fetcher, "_pushrelay_adaptive", False):
        return True
    busy = (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms)  # as constructed

    async def fetch(assignment: Any, node_id: int, request: Any) -> bool:
        brought = await original(assignment, node_id, request)
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = (
            busy if brought else IDLE_FETCH)
        return bool(brought)

    fetcher._proc_fetch_request = fetch
    fetcher._pushrelay_adaptive = True
    return True


def _record(record: ConsumerRecord[Any, Any]) -> Record:
    return Record(topic=record.topic, partition=record.partition, offset=record.offset,
                  key=record.key, value=record.value if record.value is not None else b"",
                  timestamp=record.timestamp / 1000)


def _ours(partitions: Any) -> set[TopicPartition]:
    return {TopicPartition(tp.topic, tp.partition) for tp in partitions}


def _theirs(partitions: Any) -> list[KafkaPartition]:
    return [KafkaPartition(tp.topic, tp.partition) for tp in partitions]


# ---- the adapters ------------------------------------------------------------------

class _Client:
    """One aiokafka client, started and stopped once: ``start()`` and ``stop()`` are
    idempotent, ``start()`` after ``stop()`` is a no-op (make a new one from the
    bus), and aiokafka's errors leave both as :class:`BusError`."""

    _client: AIOKafkaProducer | AIOKafkaConsumer

    def __init__(self) -> None:
        self._started = self._stopped = False

    async def start(self) -> None:
        if self._started or self._stopped:
            return
        self._started = True
        with translated():
            await self._client.start()

    async def stop(self) -> None:
        """Close (a producer flushes what is queued first; a consumer leaves its
        group, so revocation callbacks run), bounded by aiokafka's request timeout."""
        if self._stopped:
            return
        self._stopped = True
        with translated():
            await self._client.stop()

class KafkaProducer(_Client):
    """:class:`api.Producer <pushrelay.infra.bus.api.Producer>` over one aiokafka
    producer (``acks=all``, idempotent). Not restartable: ``start()`` after
    ``stop()`` is a no-op; make a new one from the bus instead."""

    def __init__(self, settings: CommonSettings, *, client_id: str,
                 linger_ms: int | None = None) -> None:
        super().__init__()
        self._settings = settings
        linger = DEFAULT_LINGER_MS if linger_ms is None else linger_ms
        # The linger is ours, across partitions (bus/linger.py); aiokafka's own,
        # per partition, stays 0 so a flushed window leaves in one request.
        self._gather = (Gather(linger / 1000, self._send_now, LINGER_MAX_RECORDS)
                        if linger > 0 else None)
        self._client = self._producer = new_producer(settings, client_id=client_id,
                                                     linger_ms=0)

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[None]:
        if self._gather is not None and not self._gather.closed:
            return self._gather.hold(topic, value, key, partition)
        return await self._send_now(topic, value, key, partition)

    async def _send_now(self, topic: str, value: bytes, key: bytes | None,
                        partition: int | None) -> asyncio.Future[None]:
        with translated(produce=True):
            future = await self._producer.send(topic, value, key=key, partition=partition)
        return _resolved(future)

    async def stop(self) -> None:
        """Hand on what the linger holds, then flush and close (idempotent)."""
        if self._gather is not None:
            await self._gather.close()
        await super().stop()

    async def partitions(self, topic: str) -> Sequence[int]:
        with translated(produce=True):
            return sorted(await self._producer.partitions_for(topic))

    async def probe(self) -> None:
        """A metadata fetch from the brokers: :class:`BusUnavailable` (or
        :class:`BusTimeout`) unless one answers within :data:`PROBE_TIMEOUT`."""
        try:
            async with asyncio.timeout(min(PROBE_TIMEOUT, self._settings.kafka_request_timeout)):
                await self._producer.client.fetch_all_metadata()
        except TimeoutError:
            raise BusTimeout("metadata probe: no answer in time") from None
        except (KafkaError, OSError) as exc:  # "no broker answered" is plain KafkaError
            raise BusUnavailable(f"metadata probe failed: {type(exc).__name__}") from exc


class _Listener(ConsumerRebalanceListener):
    """aiokafka's rebalance callbacks, passed on as :class:`api.Rebalance` calls."""

    def __init__(self, listener: Rebalance) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._listener.on_revoked(_ours(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._listener.on_assigned(_ours(assigned))


class KafkaConsumer(_Client):
    """:class:`api.Consumer <pushrelay.infra.bus.api.Consumer>` over one aiokafka
    group member on one topic (explicit commits, from the earliest record)."""

    def __init__(self, settings: CommonSettings, topic: str, group: str, *,
                 client_id: str, listener: Rebalance | None = None) -> None:
        super().__init__()
        self._client = self._consumer = new_consumer(
            settings, topic, group, listener=_Listener(listener) if listener else None,
            client_id=client_id)

    async def start(self) -> None:
        await super().start()
        adaptive_fetch(self._consumer)  # idempotent

    async def poll(self, wait: float, max_records: int
                   ) -> Mapping[TopicPartition, Sequence[Record]]:
        with translated():
            batch = await self._consumer.getmany(timeout_ms=int(wait * 1000),
                                                 max_records=max_records)
        return {TopicPartition(tp.topic, tp.partition): [_record(r) for r in records]
                for tp, records in batch.items()}

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        with translated(commit=True):
            await self._consumer.commit(
                {KafkaPartition(tp.topic, tp.partition): n for tp, n in offsets.items()})

    def assignment(self) -> set[TopicPartition]:
        return _ours(self._consumer.assignment())

    def pause(self, *partitions: TopicPartition) -> None:
        self._consumer.pause(*_theirs(partitions))

    def resume(self, *partitions: TopicPartition) -> None:
        self._consumer.resume(*_theirs(partitions))

    def paused(self) -> set[TopicPartition]:
        return _ours(self._consumer.paused())


class KafkaBus:
    """:class:`api.Bus <pushrelay.infra.bus.api.Bus>` on a Kafka cluster.

    Holds no connection of its own (each producer, consumer and admin call has
    its own client), so ``start()``/``stop()`` only mark its lifetime; they are
    idempotent like every other start/stop.
    """

    kind: BusKind = "kafka"

    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    async def ensure_topics(self) -> None:
        """Create missing topics (idempotent; safe from several replicas at once)."""
        settings = self.settings
        admin = AIOKafkaAdminClient(
            **connection_options(settings),
            request_timeout_ms=int(settings.kafka_request_timeout * 1000),
        )
        guarded(admin._client)
        with translated():
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                missing = [
                    NewTopic(name, settings.topic_partitions, settings.topic_replication,
                             topic_configs=cfg)
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

    def producer(self, *, client_id: str, linger_ms: int | None = None) -> KafkaProducer:
        return KafkaProducer(self.settings, client_id=client_id, linger_ms=linger_ms)

    def consumer(self, topic: str, group: str, *, client_id: str,
                 listener: Rebalance | None = None) -> KafkaConsumer:
        return KafkaConsumer(self.settings, topic, group, client_id=client_id,
                             listener=listener)

    async def read_topic(self, topic: str, max_wait: float = 10.0) -> list[Record]:
        """Every record of ``topic`` now (a consumer without a group: nothing
        committed); :class:`BusTimeout` if they are not all read in ``max_wait``."""
        consumer = AIOKafkaConsumer(
            **connection_options(self.settings), enable_auto_commit=False,
            auto_offset_reset="earliest", group_id=None,
        )
        guarded(consumer._client)
        by_partition: dict[int, list[Record]] = {}
        with translated():
            await consumer.start()
            try:
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    await consumer._client.force_metadata_update()  # noqa: SLF001
                    partitions = consumer.partitions_for_topic(topic) or set()
                tps = [KafkaPartition(topic, p) for p in sorted(partitions)]
                if not tps:
                    return []
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                end = await consumer.end_offsets(tps)
                pending = {tp for tp in tps if end[tp] > 0}
                async with asyncio.timeout(max_wait):
                    while pending:
                        batch = await consumer.getmany(*pending, timeout_ms=500)
                        for tp, records in batch.items():
                            by_partition.setdefault(tp.partition, []).extend(
                                _record(r) for r in records if r.offset < end[tp])
                        for tp in list(pending):
                            if await consumer.position(tp) >= end[tp]:
                                pending.discard(tp)
            finally:
                await consumer.stop()
        return [r for p in sorted(by_partition) for r in by_partition[p]]
