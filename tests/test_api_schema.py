"""schemathesis against the OpenAPI document of the live API (``memberhub serve``, uvicorn on
127.0.0.1, an admin's token): generated requests, valid and invalid, to every operation under
/api/v1 must never get a 5xx, and every answer must match the document (status, content type,
body schema); requests that break the schema must be refused with a 4xx. A few examples per
operation keep it well under a minute."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from test_web_world import World, copy_world, served

pytest_plugins = ("test_web_world",)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def live_api(web_world_template: World, tmp_path_factory: pytest.TempPathFactory):
    world = copy_world(web_world_template, tmp_path_factory.mktemp("schema-world"))
    with served(world) as base:
        yield base, world.tokens["ada"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_matches_its_openapi_document(live_api, mode):
    base, token = live_api
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json").include(path_regex="^/api/v1/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=30)

        exercise()


def test_the_document_describes_every_operation_with_bearer_auth(live_api):
    import httpx

    base, _token = live_api
    document = httpx.get(f"{base}/api/v1/openapi.json").json()
    operations = [(m, p) for p, item in document["paths"].items() for m in item if p.startswith("/api/v1/")]
    assert len(operations) >= 13
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for method, path in operations:
        responses = document["paths"][path][method]["responses"]
        assert {"401", "403", "422"} <= set(responses), (method, path)
