"""``pushrelay devstack up | down | env | status | exec`` (and, from
:mod:`pushrelay_devstack.containers`, ``docker``, ``images``, ``compose``)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from pushrelay_devstack import containers, tools
from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.stack import Devstack


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "devstack",
        help="real etcd + kube-apiserver + Kafka on loopback",
        description="Run a real etcd, kube-apiserver and Kafka (KRaft) on 127.0.0.1. "
        "Binaries are built/resolved once into ~/.cache/pushrelay (PUSHRELAY_CACHE_DIR).",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state directory (env PUSHRELAY_DEVSTACK_DIR; default ~/.cache/pushrelay/devstack)",
    )

    def _help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)
    sub = parser.add_subparsers(dest="devstack_command", metavar="ACTION")
    # --state-dir is accepted after the action too (`devstack up --state-dir X`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)

    up = sub.add_parser("up", parents=[common],
                        help="build what is missing, start what is not running")
    up.add_argument(
        "--apiserver-arg",
        action="append",
        default=None,
        metavar="FLAG",
        help="extra kube-apiserver flag, repeatable (default: env "
        "PUSHRELAY_DEVSTACK_APISERVER_ARGS)",
    )
    up.add_argument(
        "--node", action="store_true", default=None,
        help="also run a Kubernetes node (containerd, kubelet, kube-proxy, kube-scheduler) "
        "so deploy/ runs as real pods; needs root, ~250 MB more RAM plus the pods, and a "
        "one-time build (docs/devstack.md). Remembered by the state directory",
    )
    up.set_defaults(func=_up)

    down = sub.add_parser("down", parents=[common], help="stop the processes `up` started")
    down.add_argument("--purge", action="store_true", help="also delete the state directory")
    down.set_defaults(func=_down)

    env = sub.add_parser(
        "env", parents=[common],
        help="print `export KUBECONFIG=... PUSHRELAY_KAFKA_BOOTSTRAP=...`",
    )
    env.set_defaults(func=_env)

    status = sub.add_parser(
        "status", parents=[common], help="each component's pid, port and health"
    )
    status.set_defaults(func=_status)

    run = sub.add_parser(
        "exec", parents=[common],
        help="run a command with the devstack's environment (`up` first, `down` after "
        "if this started it)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command and arguments")
    run.set_defaults(func=_exec)

    tool = sub.add_parser(
        "tool", help="print the path of a cached tool (built once), or run it with -- ARGS",
    )
    tool.add_argument("name", choices=sorted(tools.TOOLS), help="the tool")
    tool.add_argument("cmd", nargs=argparse.REMAINDER, help="-- arguments to run it with")
    tool.set_defaults(func=_tool)
    containers.register(sub, common)


def _stack(args: argparse.Namespace, apiserver_args: list[str] | None = None) -> Devstack:
    return Devstack(args.state_dir, apiserver_args=apiserver_args,
                    node=getattr(args, "node", None))


def _fail(exc: DevstackError) -> int:
    print(f"devstack: error: {exc}", file=sys.stderr)
    tail = exc.tail()
    if tail:
        print(f"--- last lines of {exc.log} ---\n{tail}", file=sys.stderr)
    return 1


def _up(args: argparse.Namespace) -> int:
    stack = _stack(args, args.apiserver_arg)
    was_healthy = stack.paths.run.is_dir() and stack.healthy()
    try:
        stack.up()
    except DevstackError as exc:
        return _fail(exc)
    if was_healthy:
        print("devstack: already running", file=sys.stderr)
    _print_status(stack)
    print(f"\n# eval \"$(pushrelay devstack env)\"   (or: source {stack.paths.env_file})")
    return 0


def _down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    try:
        stopped = stack.down(purge=args.purge)
    except DevstackError as exc:
        return _fail(exc)
    print(f"devstack: stopped {', '.join(stopped) if stopped else 'nothing (not running)'}")
    return 0


def _env(args: argparse.Namespace) -> int:
    stack = _stack(args)
    if not stack.paths.env_file.is_file():
        print(f"devstack: not set up in {stack.paths.root}; run `pushrelay devstack up`",
              file=sys.stderr)
        return 1
    sys.stdout.write(stack.paths.env_file.read_text())
    return 0


def _exec(args: argparse.Namespace) -> int:
    """Up, run the command with KUBECONFIG etc. exported, down if we started it.

    ``make test`` uses this so a cold build shows its progress before pytest
    starts, and pytest's fixtures reuse the running stack.
    """
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("devstack exec: no command given (devstack exec -- CMD ...)", file=sys.stderr)
        return 2
    stack = _stack(args)
    was_healthy = stack.paths.run.is_dir() and stack.healthy()
    try:
        env = stack.up()
    except DevstackError as exc:
        return _fail(exc)
    try:
        return subprocess.call(cmd, env={**os.environ, **env})
    finally:
        if not was_healthy:
            stack.down()


def _tool(args: argparse.Namespace) -> int:
    try:
        binary = tools.TOOLS[args.name](lambda msg: print(f"devstack: {msg}", file=sys.stderr))
    except DevstackError as exc:
        return _fail(exc)
    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        print(binary)
        return 0
    return subprocess.call([str(binary), *argv])


def _status(args: argparse.Namespace) -> int:
    stack = _stack(args)
    return 0 if _print_status(stack) else 1


def _print_status(stack: Devstack) -> bool:
    rows = stack.status()
    print(f"{'COMPONENT':<25}{'PID':>8}  {'PORT':>6}  {'STATE':<10}LOG")
    for s in rows:
        state = "healthy" if s.healthy else ("unhealthy" if s.running else "stopped")
        pid = str(s.pid) if s.running else "-"
        port = str(s.port) if s.port else "-"
        print(f"{s.name:<25}{pid:>8}  {port:>6}  {state:<10}{s.log}")
    print(f"state dir: {stack.paths.root}")
    return all(s.healthy for s in rows)
