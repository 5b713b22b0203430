"""aiokafka's errors, translated once (pushrelay.infra.bus.kafka.translate)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    NotLeaderForPartitionError,
    ProducerClosed,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from pushrelay.infra.bus.api import (
    BusError,
    BusTimeout,
    BusUnavailable,
    CommitRefused,
    RecordRejected,
)
from pushrelay.infra.bus.kafka import _resolved, translate, translated


@pytest.mark.parametrize(("error", "kind", "retriable"), [
    # aiokafka marks its own timeouts non-retriable: for us they are
    (KafkaTimeoutError(), BusTimeout, True),
    (KafkaConnectionError("refused"), BusUnavailable, True),
    (NodeNotReadyError(), BusUnavailable, True),
    (ConnectionRefusedError(111, "refused"), BusUnavailable, True),
    (ProducerClosed(), BusUnavailable, True),
    (NotLeaderForPartitionError(), BusUnavailable, True),
    (RequestTimedOutError(), BusUnavailable, True),
    (UnknownTopicOrPartitionError(), BusUnavailable, True),  # retriable in Kafka: created soon
])
def test_retriable_errors(error: BaseException, kind: type[BusError], retriable: bool) -> None:
    for context in ({}, {"produce": True}, {"commit": True}):
        translated_error = translate(error, **context)
        assert type(translated_error) is kind and translated_error.retriable is retriable


@pytest.mark.parametrize("error", [MessageSizeTooLargeError(), TopicAuthorizationFailedError()])
def test_a_record_the_broker_will_never_take_is_rejected(error: KafkaError) -> None:
    rejected = translate(error, produce=True)
    assert isinstance(rejected, RecordRejected) and not rejected.retriable


def test_other_non_retriable_errors_are_bus_errors_that_say_so() -> None:
    error = translate(TopicAuthorizationFailedError())
    assert type(error) is BusError and not error.retriable
    assert BusError.retriable  # the class default is untouched
    assert translate(KafkaError("no broker answered")).retriable is False


@pytest.mark.parametrize("error", [CommitFailedError(), IllegalStateError("not assigned")])
def test_refused_commits(error: KafkaError) -> None:
    refused = translate(error, commit=True)
    assert isinstance(refused, CommitRefused) and not refused.retriable
    assert not isinstance(translate(error), CommitRefused)  # only a commit is refused


def test_the_context_manager_translates_once_and_keeps_the_cause() -> None:
    with pytest.raises(BusTimeout) as raised, translated():
        raise KafkaTimeoutError("metadata")
    assert isinstance(raised.value.__cause__, KafkaTimeoutError)
    with pytest.raises(BusUnavailable), translated():
        raise BusUnavailable("already ours")  # passed through as it is
    with pytest.raises(ValueError), translated():
        raise ValueError("a bug is not translated")


async def test_a_sends_future_raises_only_bus_errors() -> None:
    loop = asyncio.get_running_loop()
    ok, too_big, timed_out, abandoned = (loop.create_future() for _ in range(4))
    futures = [_resolved(f) for f in (ok, too_big, timed_out, abandoned)]
    ok.set_result("RecordMetadata(...)")
    too_big.set_exception(MessageSizeTooLargeError())
    timed_out.set_exception(KafkaTimeoutError())
    abandoned.cancel()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] is None  # durable: nothing else to say
    assert isinstance(results[1], RecordRejected)
    assert isinstance(results[2], BusTimeout) and results[2].retriable
    assert isinstance(results[3], BusUnavailable)


def test_records_and_partitions_are_the_interfaces_own() -> None:
    from aiokafka import ConsumerRecord
    from aiokafka import TopicPartition as KafkaPartition

    from pushrelay.infra.bus.api import Record, TopicPartition
    from pushrelay.infra.bus.kafka import _ours, _record

    raw = ConsumerRecord(topic="t", partition=2, offset=7, timestamp=1_700_000_000_123,
                         timestamp_type=0, key=b"k", value=None, checksum=None,
                         serialized_key_size=1, serialized_value_size=0, headers=())
    assert _record(raw) == Record(topic="t", partition=2, offset=7, key=b"k", value=b"",
                                  timestamp=1_700_000_000.123)  # seconds; a tombstone is b""
    (ours,) = _ours({KafkaPartition("t", 2)})
    assert type(ours) is TopicPartition and ours == KafkaPartition("t", 2)


async def test_rebalance_callbacks_reach_the_listener_as_ours() -> None:
    from aiokafka import TopicPartition as KafkaPartition

    from pushrelay.infra.bus.api import TopicPartition
    from pushrelay.infra.bus.kafka import _Listener

    calls: list[tuple[str, set[TopicPartition]]] = []

    class Listener:
        async def on_revoked(self, partitions: set[TopicPartition]) -> None:
            calls.append(("revoked", partitions))

        async def on_assigned(self, partitions: set[TopicPartition]) -> None:
            calls.append(("assigned", partitions))

    adapter = _Listener(Listener())
    await adapter.on_partitions_revoked({KafkaPartition("t", 0)})
    await adapter.on_partitions_assigned({KafkaPartition("t", 1)})
    assert calls == [("revoked", {TopicPartition("t", 0)}),
                     ("assigned", {TopicPartition("t", 1)})]
    assert all(type(tp) is TopicPartition for _, parts in calls for tp in parts)
