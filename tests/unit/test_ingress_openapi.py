"""The OpenAPI document of the receiver endpoint."""

from __future__ import annotations

import jsonschema
import openapi_spec_validator
import pytest

from ingress.openapi import openapi_document
from pushrelay.infra.settings import IngressSettings


def test_document_is_valid_openapi() -> None:
    doc = openapi_document(IngressSettings())
    openapi_spec_validator.validate(doc)
    operation = doc["paths"]["/quay/{hash}"]["post"]
    assert set(operation["responses"]) == {"202", "400", "404", "405", "408", "413", "500",
                                           "503"}
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert "X-Pushrelay-Delivery" in operation["responses"]["202"]["headers"]
    assert doc["components"]["schemas"]["QuayPush"]["required"] == ["docker_url"]


def test_paths_follow_the_base_url() -> None:
    doc = openapi_document(IngressSettings(base_url="https://hooks.example.com/kargo/"))
    assert list(doc["paths"]) == ["/kargo/quay/{hash}"]


def test_examples_match_the_schema() -> None:
    doc = openapi_document(IngressSettings())
    schema = doc["components"]["schemas"]["QuayPush"]
    jsonschema.validate(schema["example"], schema)
    jsonschema.validate({"docker_url": "q/a", "updated_tags": None}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"updated_tags": []}, schema)
