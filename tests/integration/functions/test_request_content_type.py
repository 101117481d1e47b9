"""Request bodies under any Content-Type, as Glance reads them (issue 14).

Glance's JSON routes (POST /v2/tasks, POST /v2/images, POST /v2/images/{id}/import) read the body as
JSON whatever Content-Type says (glance.common.wsgi.JSONRequestDeserializer never looks at it); its
415 is only for PATCH and for image data. So a JSON body sent as text/plain is accepted, and a body
that is not JSON is Glance's 400 "Malformed JSON", which here also says what the request declared.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import api_event, call, fresh_handler

PROJECT = "content-type-project"
TASK = {
    "type": "import",
    "input": {
        "import_from": "http://127.0.0.1/disk.qcow2",
        "import_from_format": "qcow2",
        "image_properties": {"name": "ct", "disk_format": "qcow2", "container_format": "bare"},
    },
}
IMAGE = {"name": "ct", "disk_format": "qcow2", "container_format": "bare"}
NOT_JSON_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]


@pytest.fixture
def tasks_api(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("IMPORT_ALLOW_LOOPBACK", "true")  # a loopback source passes the filter, unfetched
    return fresh_handler("tasks_api")


@pytest.fixture
def images_api(aws: dict[str, str]) -> Any:
    return fresh_handler("images_api")


def post(handler: Any, path: str, raw: str, content_type: str | None) -> dict[str, Any]:
    event = api_event("POST", path, raw_body=raw, project=PROJECT)
    for headers in (event["headers"], event["multiValueHeaders"]):
        for name in [name for name in headers if name.lower() == "content-type"]:
            del headers[name]
    if content_type is not None:
        event["headers"]["Content-Type"] = content_type
        event["multiValueHeaders"]["Content-Type"] = [content_type]
    return call(handler, event)


@pytest.mark.parametrize("content_type", [*NOT_JSON_TYPES, None])
def test_a_json_task_is_created_whatever_its_declared_type(tasks_api: Any, content_type: str | None) -> None:
    # Given a valid create body declared as something else, or not declared at all
    # When it is posted
    response = post(tasks_api, "/v2/tasks", json.dumps(TASK), content_type)

    # Then it is created, as Glance would create it
    assert response["statusCode"] == 201, response["body"]
    assert response["json"]["status"] == "pending" and response["json"]["input"] == TASK["input"]


@pytest.mark.parametrize("content_type", NOT_JSON_TYPES)
def test_a_json_image_is_created_whatever_its_declared_type(images_api: Any, content_type: str) -> None:
    response = post(images_api, "/v2/images", json.dumps(IMAGE), content_type)

    assert response["statusCode"] == 201, response["body"]
    assert response["json"]["status"] == "queued" and response["json"]["owner"] == PROJECT


@pytest.mark.parametrize(
    ("path", "content_type", "raw"),
    [
        ("/v2/tasks", "application/x-www-form-urlencoded", "type=import&input=x"),
        ("/v2/tasks", "text/plain; charset=utf-8", "import please"),
        ("/v2/images", "application/x-www-form-urlencoded", "name=ct&disk_format=qcow2"),
    ],
)
def test_a_body_that_is_not_json_is_a_400_naming_what_was_sent(
    tasks_api: Any, images_api: Any, path: str, content_type: str, raw: str
) -> None:
    handler = tasks_api if path == "/v2/tasks" else images_api

    response = post(handler, path, raw, content_type)

    assert response["statusCode"] == 400, response["body"]
    message = response["json"]["error"]["message"]
    declared = content_type.split(";")[0]
    assert message == (
        f"Malformed JSON in request body. The body was sent as {declared}: "
        "send a JSON object, with Content-Type: application/json."
    )


def test_an_import_request_that_is_not_json_is_a_400_and_the_image_stays_queued(images_api: Any) -> None:
    # Given a queued image
    image = post(images_api, "/v2/images", json.dumps(IMAGE), "application/json")["json"]

    # When its import is requested with a form body (curl -d without a Content-Type)
    response = post(
        images_api,
        f"/v2/images/{image['id']}/import",
        "method=web-download&uri=http://127.0.0.1/disk.qcow2",
        "application/x-www-form-urlencoded",
    )

    # Then it is a 400 that says what to send, and nothing started
    assert response["statusCode"] == 400, response["body"]
    assert "Content-Type: application/json" in response["json"]["error"]["message"]
    shown = call(images_api, api_event("GET", f"/v2/images/{image['id']}", project=PROJECT))["json"]
    assert shown["status"] == "queued"


def test_malformed_json_declared_as_json_keeps_glances_text(tasks_api: Any) -> None:
    response = post(tasks_api, "/v2/tasks", '{"type": ', "application/json")

    assert response["statusCode"] == 400
    assert response["json"]["error"]["message"] == "Malformed JSON in request body."
