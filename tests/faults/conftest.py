"""The fault suite: its own devstack, a results table at the end.

Runs only when asked for (``make faults`` = ``pytest tests/faults``, or
``PUSHRELAY_FAULTS=1``): a plain ``pytest`` (``make test``) skips it, because it
kills and restarts components for ~22 minutes.

The devstack lives in ``PUSHRELAY_FAULTS_DEVSTACK_DIR`` (default
``<cache>/devstack-faults``), is started and purged by the session, and never is
the shared default one. Logs of every service process stay in
``<cache>/faults-logs/<scenario>/`` after the run. At the end the table of every
scenario is printed and, after a complete run, written between the markers of
docs/reliability.md's results section.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import new_api_client
from pushrelay_devstack.paths import cache_dir
from tests.faults.harness import FaultStack, Row, note

FAULTS_DIR = Path(__file__).resolve().parent
DOC = FAULTS_DIR.parents[1] / "docs" / "reliability.md"
BEGIN, END = "<!-- fault-results:begin -->", "<!-- fault-results:end -->"
RESULTS: list[Row] = []
SCENARIOS: set[str] = set()  # collected scenario names


def _explicit(config: pytest.Config) -> bool:
    if os.environ.get("PUSHRELAY_FAULTS") == "1":
        return True
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == FAULTS_DIR or FAULTS_DIR in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    explicit = _explicit(config)
    skip = pytest.mark.skip(reason="fault suite: run it with `make faults`")
    for item in items:
        if FAULTS_DIR not in Path(str(item.fspath)).resolve().parents:
            continue
        if explicit:
            SCENARIOS.add(item.name)
        else:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def logs_root() -> Path:
    root = cache_dir() / "faults-logs"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    for pinned in ("PUSHRELAY_DEVSTACK_ETCD_PORT", "PUSHRELAY_DEVSTACK_APISERVER_PORT",
                   "PUSHRELAY_DEVSTACK_KAFKA_PORT"):
        os.environ.pop(pinned, None)  # our own stack: free ports, never someone else's
    state = Path(os.environ.get("PUSHRELAY_FAULTS_DEVSTACK_DIR")
                 or cache_dir() / "devstack-faults")
    state.mkdir(parents=True, exist_ok=True)
    with (state.parent / f".{state.name}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.exit(f"another fault run holds {state}; wait for it to finish", 2)
        stack = FaultStack(state)
        started = time.monotonic()
        stack.up()
        note(f"fault devstack up in {time.monotonic() - started:.0f}s at {state}; kafka "
             f"{stack.bootstrap}, slow listener via proxy port {stack.slow_proxy_port}")
        try:
            yield stack
        finally:
            stack.down()


@pytest.fixture(scope="session")
async def admin(fault_stack: FaultStack) -> AsyncIterator[ApiClient]:
    api = await new_api_client(str(fault_stack.kubeconfig))
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture(scope="session")
def fault_results() -> list[Row]:
    return RESULTS


# ---- the table ---------------------------------------------------------------------------

HEADER = ("| scenario | faults injected | pushes | 202 | 503 | other | refused | spooled | "
          "notifications disabled | expected refreshes (Warehouses) | refreshed | lost | "
          "time to recover | max push→refresh | duration | result |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def _count(value: int | None) -> str:
    return "–" if value is None else str(value)


def table(rows: list[Row]) -> str:
    """503 and other count answers over every delivery attempt; refused: connections
    refused or dropped (the serving process killed); – : not applicable."""
    lines = [HEADER]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.faults} | {r.sent} | {r.acked} | {r.unavailable} | "
            f"{r.failed} | {r.refused} | {_count(r.spooled)} | {_count(r.disabled)} | "
            f"{r.expected} ({r.warehouses}) | {r.refreshed} | **{r.lost}** | "
            f"{_secs(r.recover_s)} | {_secs(r.max_latency_s)} | {r.duration_s:.0f} s | "
            f"{'pass' if r.passed else 'FAIL'} |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fault suite results")
    terminalreporter.write_line(table(RESULTS))
    for row in RESULTS:
        for text in row.notes:
            terminalreporter.write_line(f"  {row.scenario}: {text}")
    if {r.scenario for r in RESULTS} >= {n.removeprefix("test_") for n in SCENARIOS} \
            and DOC.exists():
        _write_doc(RESULTS)
        terminalreporter.write_line(f"results written to {DOC}")


def _write_doc(rows: list[Row]) -> None:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        return
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    total = sum(r.duration_s for r in rows)
    body = (f"\nLast complete run: {when}, {platform.machine()}, {os.cpu_count()} cores, "
            f"scenarios {total / 60:.0f} min in total (`make faults`).\n\n"
            f"{table(rows)}\n\n")
    notes = [f"- {r.scenario}: {n}" for r in rows for n in r.notes]
    if notes:
        body += "\n".join(notes) + "\n\n"
    DOC.write_text(head + BEGIN + body + END + tail)
