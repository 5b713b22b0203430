"""Count a process's Kafka requests by kind, from inside it (bench only).

``python -m bench.kafkacount <module> [args...]`` runs ``python -m <module>``
with :meth:`aiokafka.conn.AIOKafkaConnection.send` wrapped to count every
request the process sends (``Produce``, ``Fetch``, ``OffsetCommit``,
``Heartbeat``, ``Metadata``, ...), by the request class's name without its
version. The broker's JMX request metrics are not reachable from the bench
(no JMX client, no exporter), and counting on the client side also says
*which* process sent them.

The counts are read with a signal: on ``SIGUSR1`` a thread of its own writes
``{"seq": n, "counts": {...}}`` to the file named by ``PUSHRELAY_BENCH_COUNTS``
(atomically, by rename); the bench sends the signal and waits for ``seq`` to
change. The signal is blocked in every other thread (the mask is set before
the service starts, so its threads inherit it), so the service never sees it
and its event loop is not woken.
"""

from __future__ import annotations

import collections
import json
import os
import re
import runpy
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from aiokafka.conn import AIOKafkaConnection

ENV = "PUSHRELAY_BENCH_COUNTS"
_VERSION = re.compile(r"_v\d+$")
counts: collections.Counter[str] = collections.Counter()


_kinds: dict[type, str] = {}


def _kind(request: Any) -> str:
    cls = type(request)
    kind = _kinds.get(cls)
    if kind is None:
        kind = _kinds[cls] = _VERSION.sub("", cls.__name__).removesuffix("Request")
    return kind


def install() -> None:
    """Wrap the class's ``send`` (before any connection exists: the instance
    guard of :func:`pushrelay.infra.bus.kafka.guard_connection` then wraps ours)."""
    original = AIOKafkaConnection.send

    def send(self: AIOKafkaConnection, request: Any, expect_response: bool = True) -> Any:
        counts[_kind(request)] += 1
        return original(self, request, expect_response)

    AIOKafkaConnection.send = send


def _dump(path: Path, seq: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"seq": seq, "counts": dict(counts)}))
    tmp.replace(path)


def _serve(path: Path) -> None:
    seq = 0
    while True:
        signal.sigwait({signal.SIGUSR1})
        seq += 1
        _dump(path, seq)


def main() -> None:
    path = Path(os.environ[ENV])
    install()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    _dump(path, 0)
    threading.Thread(target=_serve, args=(path,), name="kafkacount", daemon=True).start()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def read(path: Path) -> tuple[int, dict[str, int]]:
    """(seq, counts) of the last dump; (-1, {}) while there is none."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return -1, {}
    return int(data["seq"]), {str(k): int(v) for k, v in data["counts"].items()}


if __name__ == "__main__":
    main()
