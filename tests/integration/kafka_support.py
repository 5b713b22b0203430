"""A private Kafka broker for a test that must stop and start it (outages)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pushrelay_devstack import kafka, procs
from pushrelay_devstack.paths import StatePaths


@dataclass
class PrivateKafka:
    paths: StatePaths
    libs: Path
    port: int
    record: procs.ProcRecord | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.record = kafka.start(self.libs, self.paths, self.port)
        kafka.wait_ready(self.record, timeout=120)

    def stop(self) -> None:
        record, self.record = self.record, None
        if record is not None:
            procs.stop(record)


@asynccontextmanager
async def private_kafka(directory: Path, *, started: bool) -> AsyncIterator[PrivateKafka]:
    """A broker of its own in ``directory`` (configured and formatted; running when
    ``started``), stopped at the end of the block."""
    paths = StatePaths(directory)
    paths.ensure()
    libs = await asyncio.to_thread(kafka.ensure_jars, lambda _: None)
    port, controller = procs.free_port(), procs.free_port()
    while controller == port:
        controller = procs.free_port()
    kafka.write_config(paths, port, controller)
    await asyncio.to_thread(kafka.format_storage, libs, paths)
    broker = PrivateKafka(paths, libs, port)
    try:
        if started:
            await asyncio.to_thread(broker.start)
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)


async def delete_topics(bootstrap: str, prefix: str, within: float = 20.0) -> int:
    """Delete the topics whose names start with ``prefix`` (a test's own), best effort:
    the shared devstack's broker must not pile up thousands of test topics (a
    broker restart loads every one of them; at ~2,400 topics it took over 90 s)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        async with asyncio.timeout(within):
            await admin.start()
            ours = [name for name in await admin.list_topics() if name.startswith(prefix)]
            if ours:
                await admin.delete_topics(ours)
            return len(ours)
    except Exception:  # noqa: BLE001 - cleanup only; the broker may be a test's victim
        return 0
    finally:
        await admin.close()
