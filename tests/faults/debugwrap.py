"""``python -m tests.faults.debugwrap <service>`` (or ``pushrelay all-in-one``): the service,
plus a task dump on SIGUSR1.

For investigating a hang: ``kill -USR1 <pid>`` prints every asyncio task's stack
to stderr (the service's log). The fault suite uses it instead of ``python -m
<service>`` only when ``PUSHRELAY_FAULTS_DEBUG=1``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import traceback
from types import FrameType


def _dump(_sig: int, _frame: FrameType | None) -> None:
    loop = asyncio._get_running_loop()
    print("==== asyncio task dump", file=sys.stderr, flush=True)
    if loop is None:
        traceback.print_stack(_frame, file=sys.stderr)
        return
    for task in asyncio.all_tasks(loop):
        print(f"---- {task.get_name()}: {task!r}"[:400], file=sys.stderr)
        task.print_stack(limit=30, file=sys.stderr)
    sys.stderr.flush()


def main() -> None:
    from pushrelay.cli.services import SERVICES, run

    signal.signal(signal.SIGUSR1, _dump)
    names = sys.argv[1:]
    if names == ["pushrelay", "all-in-one"]:
        names = list(SERVICES)
    sys.exit(run(names))


if __name__ == "__main__":
    main()
