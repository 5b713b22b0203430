"""``python -m bench`` (``make bench``): run the benchmarks, print the table, write the docs.

Starts a devstack of its own (state in ``--devstack-dir``, default
``~/.cache/pushrelay/devstack-bench``; never the shared one), runs the
benchmarks in order, stops and deletes that devstack. A full run rewrites the
generated part of docs/benchmarks.md; ``--quick`` (a smoke run of the same
code at small sizes) and ``--only`` write their report into the run directory
instead, unless ``--write-docs``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from bench import amplification, bus, cost, e2e, ingress, memory, micro, report, router, secrets
from bench.common import Context, Section, Sizes, say
from pushrelay.infra.kube.client import new_api_client
from pushrelay.infra.runtime import install_event_loop_policy
from pushrelay_devstack.paths import cache_dir
from pushrelay_devstack.stack import Devstack

Bench = Callable[[Context, Section], Awaitable[None]]
# (key, title, function) in the order they run; the table follows the numbering.
BENCHES: list[tuple[str, str, Bench]] = [
    ("ingress", "1. Ingress throughput and latency", ingress.run),
    ("micro", "1b. Ingress: CPU per step of an accepted push", micro.run),
    ("amplification", "3. Write amplification", amplification.run),
    ("e2e", "2. End to end: push → annotation", e2e.run),
    ("router", "4. Router throughput (10,000 Warehouses)", router.run),
    ("memory", "5. Memory (10,000 Warehouses, soak)", memory.run),
    ("cost", "8. Cost per push and at idle (CPU, Kafka messages and requests)", cost.run),
    ("secrets", "6. Ingress start with 2,000 unrelated 100 KB Secrets", secrets.run),
    # last: it stops and restarts the bench devstack's broker
    ("bus", "7. Embedded bus vs Kafka; the spool's write cost", bus.run),
]
KEYS = [key for key, _, _ in BENCHES]
DEFAULT_SOAK = 600.0  # the 10 minutes; the whole suite stays under 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: every benchmark, small sizes (a few minutes)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of: {', '.join(KEYS)}")
    parser.add_argument("--soak", type=float, default=None,
                        help=f"soak duration of the memory benchmark, s (default "
                             f"{DEFAULT_SOAK:g}; the issue's figure is 600)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a size, e.g. --set e2e_rate=100 (see bench/common.py "
                             "Sizes)")
    parser.add_argument("--service-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a PUSHRELAY_* setting for every service process the bench starts, "
                             "e.g. --service-setting FETCH_MAX_WAIT=0.05 (to compare settings)")
    parser.add_argument("--profile", action="store_true",
                        help="also record py-spy profiles of the services under load")
    parser.add_argument("--devstack-dir", default=os.environ.get("PUSHRELAY_BENCH_DEVSTACK_DIR"),
                        help="state directory of the bench's own devstack")
    parser.add_argument("--keep-devstack", action="store_true",
                        help="leave the bench devstack running (a later run reuses it)")
    parser.add_argument("--write-docs", action="store_true",
                        help="write docs/benchmarks.md even for --quick / --only runs")
    args = parser.parse_args(argv)
    only = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in only if k not in KEYS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {KEYS}")
    args.selected = only or KEYS
    args.service_settings = {}
    for item in args.service_setting:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--service-setting wants NAME=VALUE, got {item!r}")
        args.service_settings[name.upper().removeprefix("PUSHRELAY_")] = value
    return args


def start_devstack(state_dir: Path) -> Devstack:
    # A pinned port is meant for the shared devstack; the bench picks free ones.
    for name in list(os.environ):
        if name.startswith("PUSHRELAY_DEVSTACK_") and name.endswith("_PORT"):
            del os.environ[name]
    stack = Devstack(state_dir, apiserver_args=[])
    if stack.paths.run.is_dir() and stack.healthy():
        say(f"reusing the bench devstack in {state_dir}")
        return stack
    stack.down(purge=True)
    say(f"starting the bench devstack in {state_dir} (the first run on a machine builds "
        "etcd and kube-apiserver and resolves Kafka: minutes; later runs: seconds)")
    stack.up()
    return stack


async def run_all(args: argparse.Namespace, stack: Devstack, run_dir: Path,
                  sizes: Sizes) -> list[Section]:
    env = stack.env()
    main_task = asyncio.current_task()
    if main_task is not None:  # SIGTERM: stop the services and the devstack, as Ctrl-C does
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    api = await new_api_client(env["KUBECONFIG"])
    ctx = Context(sizes=sizes, quick=args.quick, run_dir=run_dir, stack=stack, env=env,
                  api=api, profile=args.profile, service_settings=args.service_settings)
    sections: list[Section] = []
    try:
        for key, title, func in BENCHES:
            if key not in args.selected:
                continue
            section = Section(key, title)
            sections.append(section)
            say(f"--- {title}")
            started = time.monotonic()
            try:
                await func(ctx, section)
            except Exception as exc:  # noqa: BLE001 - one failed benchmark, the rest go on
                section.error = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            section.seconds = time.monotonic() - started
            say(f"--- {title}: {section.seconds:.0f}s")
    finally:
        await api.close()
    ctx.state.setdefault("profiles", {})
    sections.sort(key=lambda s: s.title)
    args.profiles = ctx.state["profiles"]
    return sections


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if {"ingress", "bus"} & set(args.selected) and shutil.which("wrk") is None:
        print(f"bench: {ingress.INSTALL_HINT}", file=sys.stderr)
        return 2
    sizes = Sizes.quick() if args.quick else Sizes()
    for item in args.set:
        name, _, value = item.partition("=")
        if not hasattr(sizes, name):
            print(f"bench: unknown size {name!r}", file=sys.stderr)
            return 2
        setattr(sizes, name, type(getattr(sizes, name))(value))
    if args.soak is not None:
        sizes.soak_seconds = args.soak
    elif not args.quick:
        sizes.soak_seconds = DEFAULT_SOAK
    run_dir = cache_dir() / "bench" / time.strftime("run-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    state_dir = Path(args.devstack_dir) if args.devstack_dir else cache_dir() / "devstack-bench"
    say(f"run directory (logs, profiles, results): {run_dir}")
    started = time.monotonic()
    load_start = report.load_average()
    signal.signal(signal.SIGTERM, _interrupt)
    stack = start_devstack(state_dir)
    try:
        install_event_loop_policy()
        sections = asyncio.run(run_all(args, stack, run_dir, sizes))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted")
        return 130
    finally:
        if not args.keep_devstack:
            say("stopping the bench devstack")
            stack.down(purge=True)
    seconds = time.monotonic() - started
    info: dict[str, Any] = {
        "machine": report.machine(), "args": " ".join(sys.argv[1:] if argv is None else argv),
        "seconds": seconds, "load_start": load_start, "load_end": report.load_average(),
        "profiles": getattr(args, "profiles", {}),
    }
    print(report.table(sections))
    print(f"\ntotal: {seconds / 60:.1f} min; logs in {run_dir}")
    (run_dir / "results.json").write_bytes(orjson.dumps(
        {"info": info, "sections": sections}, option=orjson.OPT_INDENT_2,
        default=lambda o: o.__dict__))
    generated = report.markdown(sections, info)
    full = not args.quick and args.selected == KEYS
    target = report.DOCS if (full or args.write_docs) else run_dir / "benchmarks.md"
    report.write_docs(target, generated)
    print(f"report written to {target}")
    failed = [s.title for s in sections if s.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
