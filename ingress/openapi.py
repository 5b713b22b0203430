"""The OpenAPI 3.1 document of the receiver endpoint, served at ``/openapi.json``
on the health (admin) port, never on the public one."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ingress.payload import MAX_DOCKER_URL, MAX_TAG, MAX_TAGS
from pushrelay.core.receivers import QUAY, base_path_of, join_path
from pushrelay.infra.settings import IngressSettings


def _error(description: str, example: str, headers: dict[str, Any] | None = None,
           ) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"},
            "example": {"error": example},
        }},
    }
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {
    "description": "seconds after which to try again",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}}

PUSH_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "description": "Quay.io \"Push to Repository\" notification. Other fields are ignored.",
    "required": ["docker_url"],
    "properties": {
        "docker_url": {"type": "string", "minLength": 1, "maxLength": MAX_DOCKER_URL,
                       "description": "the pushed repository, e.g. quay.io/ns/repo"},
        "updated_tags": {
            "description": "pushed tags; missing or null means none (every subscribed "
                           "Warehouse is a candidate); empty strings are ignored",
            "anyOf": [
                {"type": "array", "maxItems": MAX_TAGS,
                 "items": {"type": "string", "maxLength": MAX_TAG}},
                {"type": "null"},
            ],
        },
        "name": {"type": "string"},
        "repository": {"type": "string"},
        "namespace": {"type": "string"},
        "homepage": {"type": "string"},
        "pruned_image_count": {"type": "integer"},
    },
    "additionalProperties": True,
    "example": {
        "name": "repository", "repository": "mynamespace/repository",
        "namespace": "mynamespace", "docker_url": "quay.io/mynamespace/repository",
        "homepage": "https://quay.io/repository/mynamespace/repository",
        "updated_tags": ["latest"],
    },
}


def openapi_document(settings: IngressSettings) -> dict[str, Any]:
    path = join_path(base_path_of(settings.base_url), QUAY) + "/{hash}"
    limit = settings.max_body_bytes
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pushrelay ingress",
            "version": "1",
            "description": (
                "Kargo-compatible Quay.io webhook receiver. The receiver URL is the "
                "credential: hash = sha256_hex(project + receiver name + secret). A 202 "
                "means the push event is durably stored in Kafka."
            ),
        },
        "paths": {path: {"post": {
            "operationId": "receiveQuayPush",
            "summary": "Receive a Quay.io push notification",
            "parameters": [{
                "name": "hash", "in": "path", "required": True,
                "description": "the receiver's hash (64 lower-case hex characters)",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            }],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/QuayPush"}},
            }},
            "responses": {
                "202": {
                    "description": "accepted: the event is stored in Kafka",
                    "headers": {"X-Pushrelay-Delivery": {
                        "description": "the delivery id", "required": True,
                        "schema": {"type": "string"},
                    }},
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Accepted"},
                    }},
                },
                "400": _error("malformed JSON, not an object, bad docker_url or "
                              "updated_tags", "invalid request body"),
                "404": _error("no such receiver (the same answer for every unknown or "
                              "malformed hash)", "not found"),
                "405": _error("only POST is allowed", "method not allowed",
                              {"Allow": {"schema": {"type": "string"}}}),
                "408": _error("the body did not arrive within the read timeout",
                              "request body not received in time"),
                "413": _error(f"body over {limit} bytes", f"request body exceeds {limit} bytes"),
                "500": _error("unexpected internal error (a bug)", "internal error"),
                "503": _error("receivers not loaded yet, or Kafka did not acknowledge "
                              "in time: nothing was stored", "the event could not be "
                              "stored; retry later", RETRY_AFTER),
            },
        }}},
        "components": {"schemas": {
            "QuayPush": PUSH_PAYLOAD,
            "Accepted": {
                "type": "object", "required": ["msg", "delivery"],
                "properties": {"msg": {"const": "accepted"}, "delivery": {"type": "string"}},
            },
            "Error": {
                "type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
        }},
    }


def openapi_route(settings: IngressSettings) -> web.RouteDef:
    """``GET /openapi.json`` (and HEAD): the document for ``settings``, built once."""
    document = openapi_document(settings)

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    return web.get("/openapi.json", openapi, allow_head=True)
