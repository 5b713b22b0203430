"""A Kafka connection whose transport the broker closed fails as a connection error.

Regression test for the fault suite's ``kafka_kill_9`` finding: under uvloop,
writing to a closed transport raises ``RuntimeError`` (asyncio's loop does not),
which aiokafka 0.14 does not catch (aiokafka issue 1038); its metadata task died
and the router / refresher hung after a broker restart. ``pushrelay.infra.bus``
turns it into ``KafkaConnectionError``, which aiokafka retries, on the
connections of our own clients only. Checked for any request aiokafka builds,
on a real uvloop transport.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushrelay.infra.bus.kafka import guard_connection, new_consumer, new_producer
from pushrelay.infra.settings import CommonSettings

uvloop = pytest.importorskip("uvloop")


async def _closed_connection() -> AIOKafkaConnection:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = guard_connection(AIOKafkaConnection("127.0.0.1", port))
    conn._reader, conn._writer = reader, writer
    conn._versions = {MetadataRequest.API_KEY: (0, 12)}  # as if ApiVersions had run
    conn._read_task = asyncio.ensure_future(asyncio.sleep(0))
    await conn._read_task
    writer.transport.abort()  # what the peer going away leaves behind
    await asyncio.sleep(0.01)
    server.close()
    return conn


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet="abc.-_", min_size=1, max_size=20), max_size=3))
def test_write_to_a_closed_transport_is_a_connection_error(topics: list[str]) -> None:
    async def scenario() -> None:
        conn = await _closed_connection()
        request = MetadataRequest(topics or None)
        with pytest.raises(KafkaConnectionError, match="broken"):
            await conn.send(request)
        assert conn._writer is None  # closed: aiokafka reconnects on the next request

    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        runner.run(scenario())


def test_aiokafka_errors_pass_through_unchanged() -> None:
    """aiokafka's own errors are RuntimeErrors too; they must not become
    connection errors (nor close the connection)."""
    from aiokafka.errors import IncompatibleBrokerVersion

    async def scenario() -> None:
        conn = await _closed_connection()
        conn._versions = {}  # no common version: aiokafka refuses before writing
        with pytest.raises(IncompatibleBrokerVersion):
            await conn.send(MetadataRequest(None))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def test_only_our_clients_are_guarded() -> None:
    """Importing the bus changes nothing in aiokafka: connections of other
    clients keep aiokafka's own ``send``; every connection our factories' clients
    store is guarded."""
    async def scenario() -> None:
        assert "send" not in vars(AIOKafkaConnection("127.0.0.1", 1))
        settings = CommonSettings()
        producer = new_producer(settings)
        consumer = new_consumer(settings, "t", "g")
        for client in (producer.client, consumer._client):
            client._conns[("node", 0)] = AIOKafkaConnection("127.0.0.1", 1)
            assert getattr(client._conns[("node", 0)], "_pushrelay_guarded", False)
            del client._conns[("node", 0)]  # never connected: nothing to close
        await producer.stop()
        await consumer.stop()

    asyncio.run(scenario())
