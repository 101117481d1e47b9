"""The service against its own /openapi.json: schemathesis generates requests for every documented
operation and checks that the answers are what the document promises (issue 14).

Checks: no 5xx, only documented statuses, the documented content type, bodies valid against the
documented schemas. The token is of a project of its own, so the cancel and delete routes can only
ever reach what this module created (nothing: generated ids name no task or image of that project).

No generated request may make the service fetch anything: every `import_from` a case carries is
replaced, before it is sent, by a location that cannot answer (loopback's discard port, which the
stack's import filter refuses, or a `.invalid` host, which never resolves).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.helpers import import_body, wait_for_task
from tests.image_corpus import make_raw

PROJECT = "openapi-conformance"
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Locations nothing answers at; the first is refused by the import filter (port 9 is not allowed).
UNREACHABLE_SOURCES = ("http://127.0.0.1:9/conformance.raw", "http://conformance.invalid/conformance.raw")

# Few examples per operation and no shrinking keep the module to a minute or so on two cores;
# derandomized generation makes a failure reproduce on the next run. (schemathesis' own pytest
# integration, `schemathesis.pytest.from_fixture`, does not run on pytest 9: it writes the node's
# `_nodeid`, which pytest 9 no longer has; so the cases are drawn with Hypothesis directly.)
EXAMPLES = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def api_schema(local_stack: Any) -> Any:
    # The X-Auth-Token header is this module's (a valid token): generated, even negative, values
    # would make most negative cases a 401 and leave the parameters they break untested.
    config = schemathesis.Config.from_dict(
        {"base-url": local_stack.api_url, "generation": {"with-security-parameters": False}}
    )
    return schemathesis.openapi.from_url(f"{local_stack.api_url}/openapi.json", config=config, timeout=30)


_sources = itertools.cycle(UNREACHABLE_SOURCES)


@schemathesis.serializer(
    "application/openstack-images-v2.1-json-patch", "application/openstack-images-v2.0-json-patch"
)
def json_patch(context: Any, value: Any) -> bytes:
    """Glance's JSON-patch media types (PATCH /v2/images/{image_id}) are JSON under another name."""
    return json.dumps(value).encode()


def confine_import_sources(case: Any) -> None:
    """Whatever was generated, a create body's `import_from` names a location nothing answers at."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("input"), dict) and "import_from" in body["input"]:
        body["input"]["import_from"] = next(_sources)


def failures_of(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> str | None:
    """The first failing case of `operation` in `mode`, described, or None when every case passed."""

    @EXAMPLES
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        confine_import_sources(case)
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

    try:
        run()
    except Unsatisfiable:
        # Negative mode, on an operation with no parameter and no body: there is nothing to break.
        assert mode is GenerationMode.NEGATIVE, operation.label
    except (FailureGroup, Exception) as error:  # the failed checks, or the request's own error
        return f"{operation.label} ({mode.value}):\n{error}"
    return None


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_answers_as_its_document_says(
    api_schema: Any, local_stack: Any, mode: GenerationMode
) -> None:
    # Given every operation of the served document, and a token of a project of this module's own
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 10, [op.label for op in operations]
    headers = local_stack.headers(PROJECT)
    # When schemathesis sends each one its generated cases
    failures = [failure for op in operations if (failure := failures_of(op, mode, headers)) is not None]
    # Then every answer is one the document describes
    assert not failures, "\n\n".join(failures)


def test_every_operation_answers_a_request_without_a_token_as_documented(api_schema: Any) -> None:
    # Given every operation, and no token at all
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # When each is sent generated cases, Then the 401s (and the routes that need no token) are documented
    failures = [
        failure
        for op in operations
        if (failure := failures_of(op, GenerationMode.POSITIVE, {"Accept": "application/json"})) is not None
    ]
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("source", UNREACHABLE_SOURCES)
def test_an_import_from_nowhere_is_refused_as_documented(
    api_schema: Any, local_stack: Any, source: str
) -> None:
    # Given a complete import body (the generator almost never builds one) naming an unusable source
    case = api_schema["/v2/tasks"]["POST"].Case(body=import_body(source, "raw"))
    # When it is sent, Then it is the import filter's 400, in the documented shape
    response = case.call_and_validate(headers=local_stack.headers(PROJECT), checks=CHECKS, timeout=30)
    assert response.status_code == 400, response.text


def test_a_created_task_and_its_page_are_as_documented(
    api_schema: Any, local_stack: Any, image_server: Any
) -> None:
    # Given an import from the tests' own loopback image server (the only source that answers)
    source = make_raw(image_server.root).rename(image_server.root / "conformance.raw")
    create = api_schema["/v2/tasks"]["POST"].Case(body=import_body(image_server.url(source.name), "raw"))
    headers = local_stack.headers(PROJECT)
    # When it is created, shown and listed, Then each answer matches its documented schema
    created = create.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    show = api_schema["/v2/tasks/{task_id}"]["GET"].Case(path_parameters={"task_id": task_id})
    assert show.call_and_validate(headers=headers, checks=CHECKS, timeout=30).status_code == 200
    listing = api_schema["/v2/tasks"]["GET"].Case(query={"id": task_id})
    listed = listing.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
    assert [task["id"] for task in listed.json()["tasks"]] == [task_id]
    # And once it has finished (result, progress), too
    wait_for_task(local_stack, task_id, project=PROJECT)
    assert show.call_and_validate(headers=headers, checks=CHECKS, timeout=30).json()["status"] == "success"


def test_the_document_is_served_without_a_token(local_stack: Any) -> None:
    response = requests.get(f"{local_stack.api_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    assert response.json()["components"]["securitySchemes"]["X-Auth-Token"]["in"] == "header"
