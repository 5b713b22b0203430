"""Start detached processes, remember them by PID, and stop exactly those.

Every component runs in its own session (``start_new_session=True``) so it
outlives the ``pushrelay devstack up`` command and so its whole process group
can be signalled. The PID record also stores the kernel's start time of the
process: a recycled PID belonging to someone else is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pushrelay_devstack.errors import DevstackError


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created with its folder): one
    builder or ``up`` at a time across processes (parallel test sessions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

@dataclass
class ProcRecord:
    component: str
    pid: int
    start_ticks: int
    port: int
    log: str
    argv: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ProcRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parens; fields after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    if rest[0] == "Z":  # zombie: as good as gone
        return None
    return int(rest[19])


def is_running(rec: ProcRecord) -> bool:
    return start_ticks(rec.pid) == rec.start_ticks


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def require_free(component: str, port: int, what: str = "port") -> None:
    if not port_is_free(port):
        raise DevstackError(component, f"{what} 127.0.0.1:{port} is already in use")


def start(
    component: str,
    argv: Sequence[str],
    *,
    log: Path,
    record: Path,
    port: int,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcRecord:
    """Start ``argv`` detached, output appended to ``log``; write its record."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%F %T')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=full_env,
                cwd=cwd,
                close_fds=True,
            )
        except OSError as exc:
            raise DevstackError(component, f"cannot run {argv[0]}: {exc}", log) from exc
    ticks = start_ticks(proc.pid)
    rec = ProcRecord(component, proc.pid, ticks or 0, port, str(log), list(argv))
    rec.save(record)
    # Popen object dropped on purpose: the child is reaped by init once we exit.
    # While we live, reap it in stop()/poll via os.waitpid.
    return rec


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def exited_early(rec: ProcRecord) -> bool:
    """True when the process died (reaping it if it is our child)."""
    _reap(rec.pid)
    return not is_running(rec)


def stop(rec: ProcRecord, *, timeout: float = 15.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left."""
    if not is_running(rec):
        return
    try:
        pgid = os.getpgid(rec.pid)
    except ProcessLookupError:
        return
    # Only signal a group the process leads (it does: start_new_session).
    target = pgid if pgid == rec.pid else None

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if target is not None:
                os.killpg(target, sig)
            else:
                os.kill(rec.pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(rec.pid)
        if not is_running(rec) and not _group_alive(target):
            return
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _reap(rec.pid)
        if not is_running(rec) and not _group_alive(target):
            return
        time.sleep(0.05)


def _group_alive(pgid: int | None) -> bool:
    if pgid is None:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) succeeds for zombies too; only count live members.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2 :].split()
        if int(rest[2]) == pgid and rest[0] != "Z":
            return True
    return False


def wait_until(
    component: str,
    check: Callable[[], object],
    *,
    timeout: float,
    rec: ProcRecord | None = None,
    what: str = "ready",
    interval: float = 0.25,
) -> None:
    """Poll ``check()`` until truthy; fail early if ``rec``'s process exits."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if rec is not None and exited_early(rec):
            raise DevstackError(component, "process exited during start-up", Path(rec.log))
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
        time.sleep(interval)
    detail = f" (last error: {last})" if last else ""
    log = Path(rec.log) if rec else None
    raise DevstackError(component, f"not {what} after {timeout:.0f}s{detail}", log)
