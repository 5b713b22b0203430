"""Schemathesis against the ingress's own ``/openapi.json`` (a real ``python -m ingress``).

Two runs of ``schemathesis run`` (examples, coverage and fuzzing phases; positive
and negative data; every response checked against the document):

1. the ``hash`` path parameter pinned to a served receiver, so bodies are fuzzed
   through the whole request path (400 / 202 / 413 ...), each 202 a real Kafka ack;
2. the hash generated too: unknown and malformed hashes must all get the one 404.

Nothing may answer 5xx (the documented 503 needs a Kafka outage, which this test
does not cause, so any 5xx fails). The number of cases each run made is printed
and checked against a floor. ``PUSHRELAY_FUZZ_EXAMPLES`` raises the per-phase
budget (default 300).

Checks left out, and why: ``negative_data_rejection`` — the ingress ignores
fields it does not use and does not check ``Content-Type``, like Kargo's receiver
(documented in docs/ingress.md), so a body that breaks the schema of an ignored
field is accepted on purpose; ``positive_data_acceptance`` — schema-valid bodies
whose ``updated_tags`` contain only empty strings etc. are fine, but a valid
body can still be refused for a documented reason (it is not a Quay payload the
schema can fully describe); ``ignored_auth`` and the stateful/resource checks —
there is no auth scheme in the document (the URL is the credential) and no
resources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kubernetes_asyncio.client import ApiClient

from pushrelay_devstack.procs import free_port
from tests.integration.conftest import eventually
from tests.integration.test_ingress_flow import project_with_receiver

pytest.importorskip("schemathesis", reason="pip install schemathesis (test dependency)")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("PUSHRELAY_FUZZ_EXAMPLES", "300"))
EXCLUDED = "negative_data_rejection,positive_data_acceptance,ignored_auth"


class IngressProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.health_port = free_port()  # /readyz and /openapi.json
        self.env = {**{k: v for k, v in os.environ.items()
                       if not k.startswith("PUSHRELAY_") and k != "KUBECONFIG"},
                    **env, "PUSHRELAY_INGRESS_PORT": str(self.port),
                    "PUSHRELAY_INGRESS_HOST": "127.0.0.1",
                    "PUSHRELAY_HEALTH_PORT": str(self.health_port),
                    "PUSHRELAY_HEALTH_HOST": "127.0.0.1",
                    "PUSHRELAY_BASE_URL": f"http://127.0.0.1:{self.port}"}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ingress"], cwd=ROOT,
                                         env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout=60)


@pytest.fixture
def ingress_process(devstack_env: dict[str, str], tmp_path: Path,
                    ) -> Iterator[IngressProcess]:
    prefix = f"fz{uuid.uuid4().hex[:8]}."
    proc = IngressProcess({
        "KUBECONFIG": devstack_env["KUBECONFIG"],
        "PUSHRELAY_KAFKA_BOOTSTRAP": devstack_env["PUSHRELAY_KAFKA_BOOTSTRAP"],
        "PUSHRELAY_TOPIC_PREFIX": prefix, "PUSHRELAY_TOPIC_PARTITIONS": "1",
        "PUSHRELAY_LOG_LEVEL": "WARNING",
    }, tmp_path / "ingress.log")
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


def schemathesis_run(base: str, schema: str, workdir: Path, name: str,
                     parameters: dict[str, str]) -> tuple[int, dict[str, int], str]:
    """Run the CLI with the document at ``schema`` against ``base``; (exit code, cases
    per status code, output)."""
    config = workdir / f"{name}.toml"
    lines = ["[parameters]"] + [f'"{k}" = "{v}"' for k, v in parameters.items()]
    config.write_text("\n".join(lines) + "\n")
    ndjson = workdir / f"{name}.ndjson"
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    argv = [cli, "--config-file", str(config), "run", schema, "--url", base,
            "--checks", "all", "--exclude-checks", EXCLUDED,
            "--phases", "examples,coverage,fuzzing", "--mode", "all",
            "--max-examples", str(EXAMPLES), "--seed", "1",
            "--workers", "2", "--request-timeout", "15", "--warnings", "off",
            "--report", "ndjson", "--report-ndjson-path", str(ndjson)]
    done = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "NO_COLOR": "1"}, check=False)
    return done.returncode, statuses(ndjson), done.stdout + done.stderr


def statuses(ndjson: Path) -> dict[str, int]:
    """Responses per status code, from the NDJSON event log."""
    counts: dict[str, int] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            response = node.get("response")
            if isinstance(response, dict) and isinstance(response.get("status_code"), int):
                key = str(response["status_code"])
                counts[key] = counts.get(key, 0) + 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    if ndjson.exists():
        for line in ndjson.read_bytes().splitlines():
            try:
                walk(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return counts


async def test_schemathesis_finds_no_server_error(
        ingress_process: IngressProcess, kube: ApiClient, namespace: str,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import aiohttp

    path = await project_with_receiver(kube, namespace, secret=f"fuzz-{uuid.uuid4().hex}")
    digest = path.rsplit("/", 1)[1]
    base = f"http://127.0.0.1:{ingress_process.port}"
    health = f"http://127.0.0.1:{ingress_process.health_port}"

    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(health + "/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, within=60)
    async with aiohttp.ClientSession() as http, \
            http.post(base + path, data=b'{"docker_url":"quay.io/a/b"}') as resp:
        assert resp.status == 202  # the receiver is served before fuzzing starts

    import asyncio

    runs = {}
    for name, parameters in (("pinned-hash", {"path.hash": digest}), ("any-hash", {})):
        code, counts, output = await asyncio.to_thread(
            schemathesis_run, base, health + "/openapi.json", tmp_path, name, parameters)
        runs[name] = counts
        with capsys.disabled():
            print(f"\nschemathesis {name}: {sum(counts.values())} cases, by status {counts}")
        assert code == 0, output[-6000:]
        assert not [s for s in counts if s.startswith("5")], (counts, output[-4000:])
    assert ingress_process.stop() == 0
    log = ingress_process.log.read_text()
    assert "internal error" not in log, log[-3000:]
    assert sum(runs["pinned-hash"].values()) >= 200, runs
    assert runs["pinned-hash"].get("202", 0) > 0 and runs["pinned-hash"].get("400", 0) > 0
    assert set(runs["any-hash"]) <= {"404", "405", "413"}, runs
