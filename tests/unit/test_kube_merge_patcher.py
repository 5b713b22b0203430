"""The prepared merge-patch path against a local HTTP server: what it sends (the
token taken from the Configuration on every call, through its refresh hook) and
how it translates 429 ``Retry-After`` and 5xx answers (the real API server's
other answers: tests/integration/test_refresher_patch_path.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from pushrelay.infra.kube.client import (
    MERGE_PATCH,
    METADATA_OR_OBJECT,
    MergePatcher,
    new_api_client,
)
from pushrelay.infra.kube.errors import Action, KubeError
from pushrelay.infra.kube.resources import WAREHOUSE
from refresher.patcher import Outcome, outcome_of, retry_reason

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "http://127.0.0.1:{port}"}}
users:
- name: u
  user: {{token: "first"}}
contexts:
- name: x
  context: {{cluster: c, user: u}}
current-context: x
"""


class Server:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.answers: list[web.Response] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "path": request.path,
                          "headers": dict(request.headers), "body": await request.read()})
        if self.answers:
            return self.answers.pop(0)
        return web.json_response({"kind": "PartialObjectMetadata", "metadata": {
            "uid": "u-1", "resourceVersion": "42"}})


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, int]]:
    state = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield state, port
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(server: tuple[Server, int], tmp_path: Path) -> AsyncIterator[ApiClient]:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(port=server[1]))
    client = await new_api_client(str(path))
    try:
        yield client
    finally:
        await client.close()


async def test_sends_one_merge_patch_and_reads_uid_and_version(
    server: tuple[Server, int], api: ApiClient,
) -> None:
    state, _ = server
    written = await MergePatcher(api, WAREHOUSE).patch("app", "ns", b'{"metadata":{}}')
    assert (written.uid, written.resource_version) == ("u-1", "42")
    [seen] = state.seen
    assert seen["method"] == "PATCH"
    assert seen["path"] == "/apis/kargo.akuity.io/v1alpha1/namespaces/ns/warehouses/app"
    assert seen["body"] == b'{"metadata":{}}'
    assert seen["headers"]["Content-Type"] == MERGE_PATCH
    assert seen["headers"]["Accept"] == METADATA_OR_OBJECT
    assert seen["headers"]["Authorization"] == "Bearer first"


async def test_the_token_is_read_through_the_refresh_hook_on_every_call(
    server: tuple[Server, int], api: ApiClient,
) -> None:
    """As kubernetes_asyncio does for the in-cluster token file, which rotates."""
    state, _ = server
    tokens = iter(["Bearer second", "Bearer third"])  # as the loaders store it

    def rotate(cfg: Configuration) -> None:
        cfg.api_key["BearerToken"] = next(tokens)

    api.configuration.refresh_api_key_hook = rotate
    patcher = MergePatcher(api, WAREHOUSE)
    await patcher.patch("app", "ns", b"{}")
    await patcher.patch("app", "ns", b"{}")
    assert [s["headers"]["Authorization"] for s in state.seen] == ["Bearer second",
                                                                   "Bearer third"]


async def test_a_whole_object_answer_is_read_too(
    server: tuple[Server, int], api: ApiClient,
) -> None:
    state, _ = server
    state.answers.append(web.json_response({"kind": "Warehouse", "spec": {}, "metadata": {
        "uid": "u-2", "resourceVersion": "7", "name": "app"}}))
    written = await MergePatcher(api, WAREHOUSE).patch("app", "ns", b"{}")
    assert (written.uid, written.resource_version) == ("u-2", "7")


def status(code: int, reason: str, **headers: str) -> web.Response:
    return web.Response(status=code, headers=headers, content_type="application/json",
                        body=orjson.dumps({"kind": "Status", "code": code, "reason": reason,
                                           "message": f"{reason} said the server"}))


@pytest.mark.parametrize(("answer", "retry_after", "reason"), [
    (lambda: status(429, "TooManyRequests", **{"Retry-After": "3"}), 3.0, "429"),
    (lambda: status(503, "ServiceUnavailable", **{"Retry-After": "5"}), 5.0, "5xx"),
    (lambda: status(500, "InternalError"), None, "5xx"),
    (lambda: web.Response(status=502, text="bad gateway"), None, "5xx"),
])
async def test_overload_and_server_errors_are_retried_with_retry_after(
    server: tuple[Server, int], api: ApiClient, answer: Any, retry_after: float | None,
    reason: str,
) -> None:
    state, _ = server
    state.answers.append(answer())
    with pytest.raises(KubeError) as caught:
        await MergePatcher(api, WAREHOUSE).patch("app", "ns", b"{}")
    error = caught.value
    assert error.action is Action.RETRY and outcome_of(error) is Outcome.RETRY
    assert error.retry_after == retry_after and retry_reason(error) == reason
