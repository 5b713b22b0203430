"""The one place that builds a Kubernetes API client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from yarl import URL

from pushrelay.infra.kube.errors import KubeConfigError, from_response, translated
from pushrelay.infra.kube.fields import text
from pushrelay.infra.kube.resources import Resource

JSON = "application/json"
# Server-side conversion to PartialObjectMetadata (what client-go's metadata client
# asks for), without a plain-JSON fallback: a server that cannot convert answers
# 406 rather than sending whole objects.
_AS_METADATA = "application/json;as={};g=meta.k8s.io;v=v1"
METADATA_LIST = _AS_METADATA.format("PartialObjectMetadataList")
METADATA_WATCH = _AS_METADATA.format("PartialObjectMetadata")
#: For a write whose answer is read only for its metadata: the object as
#: PartialObjectMetadata (the API server encodes, and we decode, no spec or status),
#: or the whole object from a server that cannot convert.
METADATA_OR_OBJECT = f"{METADATA_WATCH}, {JSON}"
MERGE_PATCH = "application/merge-patch+json"


async def new_api_client(kubeconfig: str | None = None) -> ApiClient:
    """An API client from ``kubeconfig``, ``$KUBECONFIG``, or the pod's service account.

    kubernetes_asyncio's HTTP session has aiohttp's ``trust_env`` on, which costs
    two thread-pool round trips on *every* call (a netrc lookup and a proxy
    lookup): measured, it doubles the CPU of a refresh PATCH. The environment
    cannot change under a running process, so it is read once here instead:
    ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` for the API server's URL become
    the client's proxy (unless the kubeconfig names one), and the session is
    rebuilt without ``trust_env``. netrc is not consulted: API-server
    credentials come from the kubeconfig or the service account.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    cfg = client.Configuration()
    await _load_config(path, cfg)
    if not cfg.proxy:
        cfg.proxy = env_proxy_for(cfg.host) if cfg.host else None
    api = ApiClient(configuration=cfg)
    _without_trust_env(api)
    return api


async def _load_config(path: str | None, cfg: client.Configuration) -> None:
    """Fill ``cfg`` from the kubeconfig at ``path`` (or the in-cluster service
    account); a missing, empty or malformed source is a :class:`KubeConfigError`."""
    source = f"kubeconfig {path}" if path else "in-cluster config (KUBECONFIG is not set)"
    if path and _missing(path):
        raise KubeConfigError(f"{source}: no such file")
    try:
        if path:
            await config.load_kube_config(config_file=path, client_configuration=cfg)
        else:
            config.load_incluster_config(client_configuration=cfg)
    except Exception as exc:  # noqa: BLE001 - parsing user input: YAML, type and config errors
        raise KubeConfigError(f"{source}: {type(exc).__name__}: {exc}"[:500]) from exc


def _missing(path: str) -> bool:
    """One kubeconfig file (not a ``:``-separated list) that does not exist. A stat,
    once at start-up, before the library reads the file just as synchronously."""
    return os.pathsep not in path and not os.path.isfile(path)


def env_proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (honouring ``NO_PROXY``), if any."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None
    if auth is not None:
        proxy = proxy.with_user(auth.login).with_password(auth.password)
    return str(proxy)


def _without_trust_env(api: ApiClient) -> None:
    rest = api.rest_client
    old: aiohttp.ClientSession = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=old.connector, trust_env=False, read_bufsize=2**21,
    )
    old.detach()  # the connector (TLS context, pool) now belongs to the new session


@asynccontextmanager
async def api_client(kubeconfig: str | None = None) -> AsyncIterator[ApiClient]:
    api = await new_api_client(kubeconfig)
    try:
        yield api
    finally:
        await api.close()


async def raw_request(
    api: ApiClient, method: str, path: str, *, body: Any = None,
    content_type: str = "application/json", query: list[tuple[str, Any]] | None = None,
    request_timeout: float = 10.0, accept: str = JSON,
) -> tuple[int, bytes, Any]:
    """One REST call: (status, raw body, headers), whatever the status.

    Transport failures still raise; callers that want errors translated use
    :func:`request_json`. ``accept`` is the media type asked for (e.g.
    :data:`METADATA_LIST`: names and versions without the objects' data).
    """
    headers = {"Accept": accept}
    payload: Any = None
    if body is not None:
        headers["Content-Type"] = content_type
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        if "json" in content_type.lower():
            # kubernetes_asyncio json.dumps() every body sent with a JSON content
            # type, so hand it JSON-native objects (orjson normalized them).
            payload = orjson.loads(payload)
    response = await api.call_api(
        path, method, query_params=query or [], header_params=headers,
        body=payload, auth_settings=["BearerToken"], _preload_content=False,
        _request_timeout=request_timeout,
    )
    return response.status, await response.read(), response.headers


async def request_json(
    api: ApiClient, method: str, path: str, *, body: Any = None,
    content_type: str = "application/json", query: list[tuple[str, Any]] | None = None,
    request_timeout: float = 10.0, accept: str = JSON,
) -> dict[str, Any]:
    """A raw REST call returning the decoded JSON body.

    A non-2xx answer, a timeout or a connection failure raises
    :class:`~pushrelay.infra.kube.errors.KubeError`; anything else propagates.
    """
    with translated():
        status, raw, headers = await raw_request(
            api, method, path, body=body, content_type=content_type, query=query,
            request_timeout=request_timeout, accept=accept,
        )
    if not 200 <= status <= 299:
        raise from_response(status, raw, headers)
    data: dict[str, Any] = orjson.loads(raw) if raw else {}
    return data


async def list_objects(
    api: ApiClient, resource: Resource, namespace: str | None = None, *,
    accept: str = JSON, **query: Any,
) -> dict[str, Any]:
    return await request_json(
        api, "GET", resource.path(namespace), query=list(query.items()), request_timeout=60.0,
        accept=accept,
    )


async def get_object(
    api: ApiClient, resource: Resource, name: str, namespace: str | None = None
) -> dict[str, Any]:
    return await request_json(api, "GET", resource.path(namespace, name))


async def merge_patch(
    api: ApiClient, resource: Resource, name: str, patch: dict[str, Any],
    namespace: str | None = None, subresource: str | None = None, request_timeout: float = 10.0,
    field_manager: str | None = None,
) -> dict[str, Any]:
    path = resource.path(namespace, name) + (f"/{subresource}" if subresource else "")
    return await request_json(
        api, "PATCH", path, body=patch, content_type="application/merge-patch+json",
        request_timeout=request_timeout,
        query=[("fieldManager", field_manager)] if field_manager else None,
    )


@dataclass(frozen=True)
class Written:
    """What a write's answer says about the object: its identity and new version."""

    uid: str
    resource_version: str


class MergePatcher:
    """JSON merge patches of objects of one resource, as one prepared aiohttp request.

    The refresher's hot path: :func:`merge_patch` goes through
    ``ApiClient.call_api`` (parameter sanitizing, header tuples, auth settings,
    ``RESTClientObject`` re-deciding content handling and ``json.dumps``-ing the
    body), which was ~30 % of the refresher's CPU under load. This sends the
    same request on the same :class:`aiohttp.ClientSession` (so the same
    connector: TLS context, client certificates, connection pool) with the same
    proxy, proxy headers and TLS server name as the API client, and:

    * the bearer token is read from the client's ``Configuration`` on **every**
      call, through ``get_api_key_with_prefix``, so kubernetes_asyncio's
      ``refresh_api_key_hook`` (the in-cluster token file, which rotates, and
      exec/OIDC kubeconfig credentials) keeps working exactly as before;
    * the body is bytes the caller encoded;
    * the answer is asked for as ``PartialObjectMetadata`` (falling back to the
      whole object) and only ``metadata.uid``/``metadata.resourceVersion`` are
      returned.

    Errors are exactly :func:`request_json`'s: a non-2xx answer is
    :func:`~pushrelay.infra.kube.errors.from_response`, a transport failure or
    timeout is translated by :func:`~pushrelay.infra.kube.errors.translated`;
    anything else propagates.
    """

    def __init__(self, api: ApiClient, resource: Resource, *,
                 request_timeout: float = 10.0) -> None:
        self._api = api
        self._resource = resource
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)

    async def patch(self, name: str, namespace: str | None, body: bytes) -> Written:
        """Merge-patch object ``name`` with ``body`` (encoded JSON)."""
        api, rest = self._api, self._api.rest_client
        cfg = api.configuration
        headers = {**api.default_headers, "Accept": METADATA_OR_OBJECT,
                   "Content-Type": MERGE_PATCH}
        if api.cookie:
            headers["Cookie"] = api.cookie
        if "BearerToken" in cfg.api_key:  # as Configuration.auth_settings() decides
            token = await cfg.get_api_key_with_prefix("BearerToken")
            if token:
                headers["authorization"] = token
        if not cfg.host:
            raise KubeConfigError("the API client's configuration names no API server")
        session: aiohttp.ClientSession = rest.pool_manager
        with translated():
            async with session.request(
                "PATCH", cfg.host + self._resource.path(namespace, name), data=body,
                headers=headers, timeout=self._timeout, proxy=rest.proxy,
                proxy_headers=rest.proxy_headers, server_hostname=rest.server_hostname,
            ) as response:
                raw = await response.read()
        if not 200 <= response.status <= 299:
            raise from_response(response.status, raw, response.headers)
        doc = orjson.loads(raw) if raw else {}
        return Written(text(doc, "metadata", "uid"), text(doc, "metadata", "resourceVersion"))
