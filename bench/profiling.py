"""Sampling profiles of the service processes under load (``--profile``).

py-spy (``pip install py-spy``) samples a running process from outside, so
the service runs unmodified and at nearly full speed. Each profile is kept in
the run directory as collapsed stacks (``<label>.folded``, for flame-graph
tools) and summarized as the functions with the most samples on-CPU
(``self``) and on the stack (``total``), plus a breakdown by library.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from bench.common import Context, say

RATE = 200  # samples per second
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")

AREAS = (  # (area, substring of the file path); first match wins
    ("logging", "/logging/"), ("logging", "pushrelay/logs.py"),
    ("pydantic", "pydantic"), ("orjson/json", "json"),
    ("aiokafka", "aiokafka"), ("kubernetes client", "kubernetes_asyncio"),
    ("aiohttp", "aiohttp"), ("yarl/multidict", "yarl"), ("yarl/multidict", "multidict"),
    ("prometheus", "prometheus_client"), ("uuid", "uuid.py"),
    ("asyncio", "asyncio/"), ("ssl", "ssl.py"),
    ("ingress", "/ingress/"), ("router", "/router/"), ("refresher", "/refresher/"),
    ("pushrelay", "/pushrelay/"),
)


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else None


def _area(file: str) -> str:
    path = "/" + file  # py-spy shortens paths under sys.path: "ingress/app.py"
    for area, needle in AREAS:
        if needle in path:
            return area
    return "other"


def summarize(folded: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self and total samples, and samples by library."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = []
        for raw in stack.split(";"):
            match = _FRAME.match(raw)
            func, file = (match["func"], match["file"]) if match else (raw, "")
            short = "/".join(Path(file).parts[-2:]) if file else ""
            frames.append((f"{func} ({short})", file))
        if not frames:
            continue
        leaf, leaf_file = frames[-1]
        own[leaf] += count
        areas[_area(leaf_file)] += count
        for name in {name for name, _ in frames}:
            total[name] += count
    pct = (lambda n: round(100.0 * n / samples, 1)) if samples else (lambda n: 0.0)
    return {
        "samples": samples,
        "self": [(name, pct(n)) for name, n in own.most_common(top)],
        "total": [(name, pct(n)) for name, n in total.most_common(top)],
        "areas": [(name, pct(n)) for name, n in areas.most_common()],
    }


def render(label: str, summary: dict[str, Any]) -> str:
    lines = [f"== {label}: {summary['samples']} samples"]
    lines.append("by library (self time): " + ", ".join(
        f"{name} {p}%" for name, p in summary["areas"]))
    lines.append("top self:")
    lines += [f"  {p:5.1f}%  {name}" for name, p in summary["self"]]
    lines.append("top total:")
    lines += [f"  {p:5.1f}%  {name}" for name, p in summary["total"]]
    return "\n".join(lines)


async def record(ctx: Context, pids: dict[str, int], seconds: float,
                 workload: Awaitable[Any]) -> Any:
    """Profile each ``label: pid`` for ``seconds`` while ``workload`` runs; returns the
    workload's result. Without py-spy the workload runs unprofiled."""
    tool = py_spy()
    if tool is None:
        say("profile skipped: py-spy is missing (`.venv/bin/pip install py-spy`)")
        return await workload
    folder = ctx.run_dir / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    spies = {}
    for label, pid in pids.items():
        out = folder / f"{label}.folded"
        spies[label] = (out, await asyncio.create_subprocess_exec(
            tool, "record", "-p", str(pid), "-d", str(max(1, round(seconds))),
            "-r", str(RATE), "-f", "raw", "-o", str(out), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE))
    try:
        return await workload
    finally:
        for label, (out, proc) in spies.items():
            _, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
            if not out.exists():
                say(f"profile of {label} failed: {err.decode(errors='replace')[-500:]}")
                continue
            summary = summarize(out)
            text = render(label, summary)
            out.with_suffix(".txt").write_text(text + "\n")
            ctx.state.setdefault("profiles", {})[label] = summary
            say(text)
