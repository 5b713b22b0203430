"""The ingress reads the data of referenced Secrets only, proven by the API server.

A devstack of its own (state in ``<cache>/devstack-secret-reads-<pid>``, deleted
afterwards; the shared one is never loaded with the noise) whose kube-apiserver
writes an audit log of every Secret read with its response
(:mod:`pushrelay_devstack.audit`). The cluster holds ``PUSHRELAY_TEST_UNRELATED_SECRETS``
(default 400: creating the issue's full 2,000 x 100 KB takes minutes here; the
benchmark, ``make bench ARGS=--only=secrets``, uses 2,000) Helm-release-like
Secrets of 100 KB in 20 namespaces, plus a bystander Secret that has a
``secret`` key but no receiver referring to it. Through start, rotation, an
unrelated update storm, delete + re-create of a referenced Secret and a restart
of the API server (the broken watch makes the informer list again: the same
re-list as after 410 Gone), the audit log must show:

* cluster-wide Secret LISTs answered as ``PartialObjectMetadataList`` only;
* data sent for referenced Secrets only, each read a LIST in its namespace
  with ``fieldSelector=metadata.name=<it>``; no ``get``;

and the API server's sockets must have sent this process about a kilobyte per
changed unrelated Secret (metadata), not its 100 KB (:func:`audit.bytes_sent_to`).
Timings are not asserted (the benchmark measures them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from bench.secrets import create_unrelated_secrets, noise_namespaces
from pushrelay.infra.kube.client import new_api_client, request_json
from pushrelay.infra.kube.resources import CLUSTER_CONFIG, SECRET
from pushrelay_devstack import audit
from pushrelay_devstack.paths import cache_dir
from pushrelay_devstack.stack import Devstack
from tests.integration.conftest import eventually, make_settings
from tests.integration.test_ingress_flow import (
    create_project_config,
    expected_path,
    put_secret,
    quay_receiver,
    running_ingress,
)

UNRELATED = int(os.environ.get("PUSHRELAY_TEST_UNRELATED_SECRETS", "400"))
DATA_BYTES = 100_000
NAMESPACES = 20
STORM = 20  # unrelated Secrets updated while the ingress runs
PROJECT = "secret-reads"
CLUSTER_NS = "kargo-system-resources"


@pytest.fixture(scope="module")
def audited() -> Iterator[tuple[Devstack, Path]]:
    state = cache_dir() / f"devstack-secret-reads-{os.getpid()}"
    audit_dir = state.parent / f"{state.name}-audit"
    # A pinned port is meant for the shared devstack; this one picks free ones.
    pinned = {k: os.environ.pop(k) for k in list(os.environ)
              if k.startswith("PUSHRELAY_DEVSTACK_") and k.endswith("_PORT")}
    stack = Devstack(state, apiserver_args=audit.apiserver_args(audit_dir))
    try:
        stack.down(purge=True)  # leftovers of an interrupted run
        stack.up()
        yield stack, audit.log_path(audit_dir)
    finally:
        stack.down(purge=True)
        shutil.rmtree(audit_dir, ignore_errors=True)
        os.environ.update(pinned)


@pytest.fixture
async def admin(audited: tuple[Devstack, Path]) -> AsyncIterator[ApiClient]:
    api = await new_api_client(str(audited[0].kubeconfig))
    try:
        yield api
    finally:
        await api.close()


STORM_SCRIPT = """
import base64, os, sys
from pushrelay_devstack.stack import Devstack
client = Devstack(sys.argv[1]).admin_client()
filler = base64.b64encode(os.urandom(int(sys.argv[2]))).decode()
for ref in sys.argv[3:]:
    ns, name = ref.split("/")
    status, _ = client.request("PATCH", f"/api/v1/namespaces/{ns}/secrets/{name}",
                               {"data": {"release": filler}}, "application/merge-patch+json")
    assert status == 200, status
"""


async def update_unrelated(stack: Devstack, namespaces: list[str]) -> None:
    """Change ``STORM`` unrelated Secrets from another process (its replies, whole
    Secrets, must not count as bytes sent to this one)."""
    refs = [f"{namespaces[i % len(namespaces)]}/sh.helm.release.v1.app{i}.v1"
            for i in range(STORM)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STORM_SCRIPT, str(stack.paths.root), str(DATA_BYTES), *refs)
    assert await proc.wait() == 0


def apiserver_pid(stack: Devstack) -> int:
    [pid] = [s.pid for s in stack.status() if s.name == "kube-apiserver" and s.pid]
    return pid


async def test_only_referenced_secrets_data_is_ever_read(
    audited: tuple[Devstack, Path], admin: ApiClient, topic_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack, log = audited
    namespaces = noise_namespaces(NAMESPACES)
    await create_unrelated_secrets(admin, namespaces, UNRELATED, DATA_BYTES)
    await request_json(admin, "POST", "/api/v1/namespaces", body={
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROJECT}})
    await put_secret(admin, PROJECT, "quay-secret", {"secret": "one"})
    await put_secret(admin, PROJECT, "bystander", {"secret": "no receiver refers to me"})
    await create_project_config(admin, PROJECT, [quay_receiver("push", "quay-secret")])
    await put_secret(admin, CLUSTER_NS, "cluster-quay", {"secret": "c1"})
    await request_json(admin, "POST", CLUSTER_CONFIG.path(), body={
        "apiVersion": CLUSTER_CONFIG.api_version, "kind": "ClusterConfig",
        "metadata": {"name": "cluster"},
        "spec": {"webhookReceivers": [quay_receiver("cluster-push", "cluster-quay")]}})
    referenced = {(PROJECT, "quay-secret"), (CLUSTER_NS, "cluster-quay")}

    env = {"KUBECONFIG": str(stack.kubeconfig),
           "PUSHRELAY_KAFKA_BOOTSTRAP": stack.kafka_bootstrap}
    settings = make_settings(env, topic_prefix, write_status=False)
    offset = audit.size(log)
    async with running_ingress(settings) as service:
        lookup = service.registry.lookup
        assert lookup(expected_path(PROJECT, "push", "one")) is not None
        assert lookup(expected_path("", "cluster-push", "c1")) is not None

        await put_secret(admin, PROJECT, "quay-secret", {"secret": "two"})  # rotation
        await eventually(lambda: lookup(expected_path(PROJECT, "push", "two")), within=30)
        assert lookup(expected_path(PROJECT, "push", "one")) is None

        # The watch streams: what the API server's sockets sent to this process
        # (the ingress's watches and reads; the test's own client is idle).
        server = apiserver_pid(stack)
        sent = await asyncio.to_thread(audit.bytes_sent_to, server, os.getpid())
        await update_unrelated(stack, namespaces)
        await put_secret(admin, PROJECT, "quay-secret", {"secret": "three"})  # a marker
        await eventually(lambda: lookup(expected_path(PROJECT, "push", "three")), within=30)
        storm = await asyncio.to_thread(audit.bytes_sent_to, server, os.getpid()) - sent
        assert storm < STORM * DATA_BYTES / 10, storm  # metadata: ~1 KB per event

        await request_json(admin, "DELETE", SECRET.path(PROJECT, "quay-secret"))
        await eventually(lambda: lookup(expected_path(PROJECT, "push", "three")) is None,
                         within=30)
        await put_secret(admin, PROJECT, "quay-secret", {"secret": "four"})  # re-created
        await eventually(lambda: lookup(expected_path(PROJECT, "push", "four")), within=30)

        lists_before = cluster_lists(log, offset)
        await asyncio.to_thread(stack.stop_apiserver)
        await asyncio.to_thread(stack.start_apiserver)
        await put_secret(admin, PROJECT, "quay-secret", {"secret": "five"})
        await eventually(lambda: lookup(expected_path(PROJECT, "push", "five")), within=120)
        await eventually(lambda: cluster_lists(log, offset) > lists_before, within=120)

    reads = list(audit.secret_reads(log, offset))
    assert reads, "the audit log recorded no Secret reads"
    data_sent = set().union(*(r.data_names for r in reads))
    assert data_sent and data_sent <= referenced, data_sent - referenced
    assert not [r for r in reads if r.verb == "get"]
    for read in reads:
        if read.verb != "list":
            continue
        if read.namespace is None:
            assert read.metadata_only, read
        else:
            name = read.field_selector.removeprefix("metadata.name=")
            assert (read.namespace, name) in referenced, read
    assert cluster_lists(log, offset) >= 2  # the start, and the re-list
    with capsys.disabled():
        verbs = {v: sum(1 for r in reads if r.verb == v) for v in ("list", "watch")}
        print(f"\n{UNRELATED} unrelated Secrets; audited Secret reads {verbs}, data sent for "
              f"{sorted(data_sent)}; {STORM} unrelated updates sent this process "
              f"{storm / 1000:.1f} kB (their data: {STORM * DATA_BYTES / 1000:.0f} kB)")


def cluster_lists(log: Path, offset: int) -> int:
    """Cluster-wide Secret LISTs by the ingress (kubernetes_asyncio's user agent; the
    test itself reads no Secret)."""
    return sum(1 for r in audit.secret_reads(log, offset)
               if r.verb == "list" and r.namespace is None
               and r.user_agent.startswith("OpenAPI-Generator/"))

