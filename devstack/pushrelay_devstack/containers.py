"""``pushrelay devstack docker up|down|status``, ``devstack images``, ``devstack compose``.

Registered under ``pushrelay devstack`` by :mod:`pushrelay_devstack.cli`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pushrelay_devstack import compose, docker, images
from pushrelay_devstack.errors import DevstackError
from pushrelay_devstack.stack import Devstack


def _progress(msg: str) -> None:
    print(f"devstack: {msg}", file=sys.stderr, flush=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    engine = sub.add_parser("docker", help="a local Docker engine (installed and started as root)")
    engine_sub = engine.add_subparsers(dest="docker_command", metavar="ACTION", required=True)
    engine_sub.add_parser("up", help="reuse a running engine, else install/start dockerd"
                          ).set_defaults(func=_docker_up)
    engine_sub.add_parser("down", help="stop the dockerd `docker up` started (nothing else)"
                          ).set_defaults(func=_docker_down)
    engine_sub.add_parser("status", help="which engine answers, and who started it"
                          ).set_defaults(func=_docker_status)

    imgs = sub.add_parser(
        "images", parents=[common], help="build the base, Kafka and pushrelay images (cached)",
        description="Build pushrelay-base/{python,jre} (debootstrap), pushrelay-kafka:<ver> "
        "(Maven jars) and pushrelay:<ver>/latest (compose/Dockerfile) in the local engine.",
    )
    imgs.add_argument("--only", choices=("pushrelay", "kafka"), default=None,
                      help="build one image (and its base) only")
    imgs.add_argument("--measure", action="store_true",
                      help="also print the pushrelay image's size and, when the devstack "
                      "runs, the ingress's start time (docker run to /healthz 200)")
    imgs.set_defaults(func=_images)

    comp = sub.add_parser(
        "compose", parents=[common],
        help="docker compose on compose/ against this devstack's API server",
        description="Runs Compose v2 (built from its Go module once) on "
        "compose/docker-compose.yml + compose/compose.host-network.yml with KUBECONFIG_FILE "
        "set to a copy of the devstack's kubeconfig and the locally built images.",
    )
    comp.add_argument("--project-name", "-p", default="pushrelay")
    comp.add_argument("args", nargs=argparse.REMAINDER, help="-- compose arguments (up -d, ...)")
    comp.set_defaults(func=_compose)


def _fail(exc: DevstackError) -> int:
    print(f"devstack: error: {exc}", file=sys.stderr)
    tail = exc.tail()
    if tail:
        print(f"--- last lines of {exc.log} ---\n{tail}", file=sys.stderr)
    return 1


def _docker_up(_args: argparse.Namespace) -> int:
    try:
        engine = docker.engine_up(_progress)
    except DevstackError as exc:
        return _fail(exc)
    _print_engine(engine)
    return 0


def _docker_down(_args: argparse.Namespace) -> int:
    try:
        stopped = docker.engine_down(_progress)
    except DevstackError as exc:
        return _fail(exc)
    print("devstack: stopped dockerd" if stopped
          else "devstack: no dockerd started by pushrelay is running")
    return 0


def _docker_status(_args: argparse.Namespace) -> int:
    try:
        engine = docker.engine()
    except DevstackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    _print_engine(engine)
    return 0


def _print_engine(engine: docker.Engine) -> None:
    who = "started by pushrelay" if engine.started_here else "not started by pushrelay"
    print(f"engine {engine.server_version} (API {engine.api_version}) on {engine.socket}, "
          f"{who}; client {engine.cli}")


def _images(args: argparse.Namespace) -> int:
    try:
        engine = docker.engine_up(_progress)
        if args.only in (None, "kafka"):
            print(images.ensure_kafka(engine, _progress))
        if args.only in (None, "pushrelay"):
            tag = images.ensure_pushrelay(engine, images.source_root(), _progress)
            print(tag)
            if args.measure:
                _measure(engine, tag, Devstack(args.state_dir))
    except DevstackError as exc:
        return _fail(exc)
    return 0


def _measure(engine: docker.Engine, tag: str, stack: Devstack) -> None:
    size = images.image_size(engine, tag)
    print(f"{tag}: {size / 1e6:.0f} MB")
    if not stack.healthy():
        print(f"{tag}: start time not measured (no devstack in {stack.paths.root})")
        return
    kubeconfig = compose.readable_kubeconfig(stack.kubeconfig, stack.paths.root / "compose")
    times = start_time(engine, tag, kubeconfig, stack.kafka_bootstrap)
    print(f"{tag}: container created in {times.create:.1f}s; "
          f"process start to /healthz 200 in {times.healthz:.2f}s")


@dataclass(frozen=True)
class StartTimes:
    """``create``: the engine making the container (with ``vfs``, a full copy of
    the image); ``healthz``: the container's process start to ``/healthz`` 200."""

    create: float
    healthz: float


def _started_at(engine: docker.Engine, name: str) -> float:
    """The container's State.StartedAt as a Unix time (nanoseconds cut to micro)."""
    raw = engine.run(["inspect", "--format", "{{.State.StartedAt}}", name]).stdout.decode()
    head, _, frac = raw.strip().removesuffix("Z").partition(".")
    stamp = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
    return stamp.timestamp()


def start_time(engine: docker.Engine, tag: str, kubeconfig: Path, kafka_bootstrap: str,
               timeout: float = 120.0) -> StartTimes:
    """How long the ingress container takes to be created, and to answer ``/healthz``.

    The ingress runs as it would in production, against the API server of
    ``kubeconfig`` (readable by uid 10001) and Kafka at ``kafka_bootstrap``, on
    an ephemeral port of the host network.
    """
    from pushrelay_devstack.procs import free_port

    port = free_port()
    name = f"pushrelay-start-{os.getpid()}"
    created = time.monotonic()
    engine.run(["create", "--name", name, "--network", "host",
                "-v", f"{kubeconfig}:/etc/pushrelay/kubeconfig:ro",
                "-e", "KUBECONFIG=/etc/pushrelay/kubeconfig",
                "-e", "PUSHRELAY_INGRESS_HOST=127.0.0.1", "-e", f"PUSHRELAY_INGRESS_PORT={port}",
                "-e", "PUSHRELAY_HEALTH_HOST=127.0.0.1", "-e", "PUSHRELAY_HEALTH_PORT=0",
                "-e", f"PUSHRELAY_KAFKA_BOOTSTRAP={kafka_bootstrap}",
                "-e", f"PUSHRELAY_TOPIC_PREFIX=start{os.getpid()}.",
                tag, "ingress"])
    create = time.monotonic() - created
    try:
        engine.run(["start", name])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        answered = time.time()
                        return StartTimes(create, answered - _started_at(engine, name))
            except OSError:
                pass
            time.sleep(0.05)
        raise DevstackError("images", f"{tag} did not answer /healthz within {timeout:.0f}s")
    finally:
        engine.run(["rm", "-f", name], check=False)


def _compose(args: argparse.Namespace) -> int:
    cmd = args.args[1:] if args.args[:1] == ["--"] else args.args
    try:
        engine = docker.engine_up(_progress)
        binary = compose.ensure_binary(_progress)
        stack = Devstack(args.state_dir)
        if not stack.kubeconfig.is_file():
            raise DevstackError("compose", f"no devstack in {stack.paths.root}; run "
                                "`pushrelay devstack up` first")
        env = compose.devstack_env(stack.kubeconfig, stack.paths.root / "compose")
        project = compose.Project(engine, binary, args.project_name, compose.compose_dir(), env)
    except DevstackError as exc:
        return _fail(exc)
    return subprocess.call(project.argv(cmd), env={**os.environ, **engine.env, **env})
