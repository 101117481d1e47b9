"""API Gateway's own errors, as the template shapes them and the local front sends them: the body's
code is always the status the response is sent with (a DEFAULT_4XX that said 400 for a 429 misled
clients), in Glance's nested shape."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import pytest

from local.front import ApiFront

# Every 4XX type API Gateway documents for REST APIs, with the status it sends for it.
DOCUMENTED_4XX = {
    "ACCESS_DENIED": 403,
    "BAD_REQUEST_PARAMETERS": 400,
    "BAD_REQUEST_BODY": 400,
    "EXPIRED_TOKEN": 403,
    "INVALID_API_KEY": 403,
    "INVALID_SIGNATURE": 403,
    "MISSING_AUTHENTICATION_TOKEN": 403,
    "QUOTA_EXCEEDED": 429,
    "REQUEST_TOO_LARGE": 413,
    "RESOURCE_NOT_FOUND": 404,
    "THROTTLED": 429,
    "UNAUTHORIZED": 401,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "WAF_FILTERED": 403,
}


def rendered(template: str) -> dict[str, Any]:
    """The body API Gateway sends: $context.error.messageString is the message, quoted."""
    body = template.replace("$context.error.messageString", json.dumps('a "quoted" message'))
    return json.loads(body)["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("response_type", "status"), sorted(DOCUMENTED_4XX.items()))
def test_every_documented_4xx_type_has_a_response_whose_code_is_its_status(
    local_template: Any, response_type: str, status: int
) -> None:
    response = local_template.gateway_responses[response_type]

    assert response.status == status
    error = rendered(response.template)
    assert error["code"] == status and error["title"] == HTTPStatus(status).phrase
    assert isinstance(error["message"], str) and error["message"]


def test_the_default_responses_never_say_a_code_other_than_their_status(local_template: Any) -> None:
    default_4xx = local_template.gateway_responses["DEFAULT_4XX"]
    assert default_4xx.status == 400 and rendered(default_4xx.template)["code"] == 400
    for response_type, response in local_template.gateway_responses.items():
        if response.status is not None:
            assert rendered(response.template)["code"] == response.status, response_type


class NoFunctions:
    """The front's runner, for requests the front answers itself (nothing may be invoked)."""

    functions: dict[str, Any] = {}

    def invoke(self, *args: object) -> Any:
        raise AssertionError("nothing should be invoked")


@pytest.fixture
def front(local_template: Any) -> ApiFront:
    return ApiFront(local_template, NoFunctions())  # type: ignore[arg-type]


def test_the_local_front_sends_a_too_large_body_as_413_with_code_413(front: ApiFront) -> None:
    response = front.handle("POST", "/v2/tasks", [("X-Auth-Token", "t")], b"x" * (10 * 1024 * 1024 + 1))

    error = json.loads(response.body)["error"]
    assert (response.status, error["code"], error["title"]) == (413, 413, "Request Entity Too Large")
    assert response.header("x-openstack-request-id")


def test_the_local_front_sends_a_missing_token_as_401_with_code_401(front: ApiFront) -> None:
    response = front.handle("GET", "/v2/tasks", [], b"")

    assert response.status == 401 and json.loads(response.body)["error"]["code"] == 401


@pytest.mark.parametrize(("response_type", "status"), [("THROTTLED", 429), ("WAF_FILTERED", 403)])
def test_the_local_front_shapes_any_gateway_error_with_its_types_response(
    front: ApiFront, response_type: str, status: int
) -> None:
    response = front._gateway_error(response_type, status, "Too Many Requests", "req-1")

    assert response.status == status and json.loads(response.body)["error"]["code"] == status
