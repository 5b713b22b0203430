"""Kafka for tests from testcontainers' Kafka provider, on the locally built image.

``PUSHRELAY_TEST_KAFKA=testcontainers`` makes the integration tests' session
fixture start Kafka this way instead of using the devstack's broker (the API
server still comes from the devstack). The provider (``testcontainers[kafka]``,
the ``docker`` extra) drives the image through Confluent's start-up interface,
which ``pushrelay-kafka`` implements (see ``kafka-image/Dockerfile``).

Two adaptations, both in :class:`HostNetworkKafkaContainer`:

* the engine the devstack starts has no bridge, so published ports do not
  exist: the container joins the host network and its three listeners
  (client, inter-broker, controller) take free loopback ports;
* the provider's KRaft check reads a Confluent Platform version from the image
  tag, while ``pushrelay-kafka``'s tag is Apache Kafka's own version (KRaft
  since 3.3; the devstack runs 3.9).

Ryuk (the provider's reaper container) is an image from a registry, so it is
off; the context manager removes the container.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pushrelay_devstack import docker, images
from pushrelay_devstack.procs import free_port

ENV = "PUSHRELAY_TEST_KAFKA"


def wanted() -> bool:
    """True when the tests should take Kafka from testcontainers."""
    value = os.environ.get(ENV, "devstack").strip().lower()
    if value not in ("devstack", "testcontainers"):
        raise ValueError(f"{ENV}={value!r}: expected 'devstack' or 'testcontainers'")
    return value == "testcontainers"


def _container_class() -> type[Any]:
    # Imported late: testcontainers is an optional extra.
    from testcontainers.community.kafka import KafkaContainer

    class HostNetworkKafkaContainer(KafkaContainer):
        """The provider's KafkaContainer on the host network, KRaft, free loopback ports."""

        def __init__(self, image: str) -> None:
            self.client_port, self.broker_port, self.controller_port = (
                free_port(), free_port(), free_port())
            super().__init__(image=image, port=self.client_port)
            self.listeners = (f"{self.listener_name}://127.0.0.1:{self.client_port},"
                              f"BROKER://127.0.0.1:{self.broker_port}")
            self.with_env("KAFKA_LISTENERS", self.listeners)
            self.with_kwargs(network_mode="host")
            self.ports.clear()  # nothing to publish on the host network
            self.kraft_enabled = True

        def _configure_kraft(self) -> None:
            super()._configure_kraft()
            self.with_env("KAFKA_LISTENERS",
                          f"{self.listeners},CONTROLLER://127.0.0.1:{self.controller_port}")
            self.with_env("KAFKA_CONTROLLER_QUORUM_VOTERS",
                          f"1@127.0.0.1:{self.controller_port}")
            self.with_env("KAFKA_ADVERTISED_LISTENERS", self.listeners)
            self.with_env("KAFKA_HEAP_OPTS", "-Xmx384m -Xms64m")

        def get_container_host_ip(self) -> str:
            return "127.0.0.1"

        def get_exposed_port(self, port: int) -> int:
            return int(port)  # host network: the container's ports are the host's

        def tc_start(self) -> None:
            # The provider's script with the advertised listeners already set
            # (its own derives them from `hostname -i`, a bridge address).
            self.create_file(
                ("#!/bin/sh\nset -e\n" + self.boot_command + "\n"
                 f"export KAFKA_ADVERTISED_LISTENERS={self.listeners}\n"
                 ". /etc/confluent/docker/bash-config\n"
                 "/etc/confluent/docker/configure\n"
                 "exec /etc/confluent/docker/launch\n").encode(),
                self.TC_START_SCRIPT,
            )

    return HostNetworkKafkaContainer


@contextmanager
def kafka(progress: images.Progress = lambda _msg: None,
          startup_timeout: int = 600) -> Iterator[str]:
    """A running Kafka container; yields its bootstrap address, removes it after."""
    engine = docker.engine_up(progress)
    image = images.ensure_kafka(engine, progress)
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("DOCKER_HOST", engine.env["DOCKER_HOST"])
    container = _container_class()(image)
    try:
        container.start(timeout=startup_timeout)
        yield str(container.get_bootstrap_server())
    finally:
        container.stop()
