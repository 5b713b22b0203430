"""Kafka TLS and SASL settings: what every client is given, and what is refused.

The TLS context is exercised for real: a loopback TLS server with a certificate
from a throwaway CA (the devstack's PKI code) that requires a client certificate
accepts a handshake made with the context ``connection_options`` builds, and
refuses one made without the CA.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from pushrelay.infra.bus import kafka as bus
from pushrelay.infra.settings import Settings
from pushrelay_devstack.certs import Pki, ensure_pki, issue_client


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PUSHRELAY_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("pki"))


def test_plaintext_by_default() -> None:
    options = bus.connection_options(Settings(kafka_bootstrap="k1:9092,k2:9092"))
    assert options == {"bootstrap_servers": "k1:9092,k2:9092",
                       "security_protocol": "PLAINTEXT"}


def test_sasl_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHRELAY_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("PUSHRELAY_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PUSHRELAY_KAFKA_SASL_USERNAME", "pushrelay")
    monkeypatch.setenv("PUSHRELAY_KAFKA_SASL_PASSWORD", "s3cret")
    settings = Settings()
    options = bus.connection_options(settings)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert (options["sasl_mechanism"], options["sasl_plain_username"],
            options["sasl_plain_password"]) == ("SCRAM-SHA-512", "pushrelay", "s3cret")
    assert "ssl_context" not in options
    assert "s3cret" not in repr(settings)  # a SecretStr: never printed with the settings


async def test_every_client_gets_the_connection_options(pki: Pki) -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u",
                        kafka_sasl_password="p", kafka_ca_file=str(pki.ca_cert))
    producer = bus.new_producer(settings)
    consumer = bus.new_consumer(settings, "t", "g")
    for client in (producer.client, consumer._client):  # noqa: SLF001
        assert client._security_protocol == "SASL_SSL"  # noqa: SLF001
        assert isinstance(client._ssl_context, ssl.SSLContext)  # noqa: SLF001
        assert client._sasl_plain_password == "p"  # noqa: SLF001


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "PUSHRELAY_KAFKA_SASL_USERNAME"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
         "PUSHRELAY_KAFKA_SASL_PASSWORD"),
        ({"kafka_security_protocol": "SSL", "kafka_cert_file": "/c.pem"}, "go together"),
        ({"kafka_ca_file": "/ca.pem"}, "SSL or SASL_SSL"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI",
          "kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "kafka_sasl_mechanism"),
    ],
)
def test_incomplete_security_settings_are_clear_errors(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[int]:
    """A loopback TLS server that requires a client certificate signed by the CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki.serving_cert), str(pki.serving_key))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _handshake(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"),
        timeout=30,
    )
    try:
        return await asyncio.wait_for(reader.read(2), timeout=30)
    finally:
        writer.close()


async def test_tls_context_verifies_the_broker_and_presents_the_client_cert(
    pki: Pki, tls_server: int
) -> None:
    cert, key = issue_client(pki, "pushrelay")
    settings = Settings(kafka_security_protocol="SSL", kafka_ca_file=str(pki.ca_cert),
                        kafka_cert_file=str(cert), kafka_key_file=str(key))
    context = bus.connection_options(settings)["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert await _handshake(tls_server, context) == b"ok"


async def test_tls_without_the_ca_refuses_the_broker(tls_server: int) -> None:
    context = bus.connection_options(Settings(kafka_security_protocol="SSL"))["ssl_context"]
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(tls_server, context)
