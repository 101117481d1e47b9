"""A page on another origin may call the API (template parameter CorsAllowOrigin): the template's
`Cors` answers every path's preflight without a token, API Gateway's own errors carry the origin, and
the local front answers the preflights as API Gateway would."""

from __future__ import annotations

import json
from typing import Any

import pytest

from local.front import ApiFront
from local.template import load_template, load_yaml
from tests.support import ROOT

TEMPLATE = load_yaml(ROOT / "template.yaml")
ORIGIN_HEADER = "gatewayresponse.header.Access-Control-Allow-Origin"


class NoFunctions:
    """A preflight is API Gateway's mock integration: nothing may be invoked."""

    functions: dict[str, Any] = {}

    def invoke(self, *args: object) -> Any:
        raise AssertionError("nothing should be invoked")


def test_the_api_allows_the_token_header_from_the_parameters_origin_without_a_token_on_preflights() -> None:
    api = TEMPLATE["Resources"]["TasksApi"]["Properties"]
    allowed_headers = api["Cors"]["AllowHeaders"].strip("'").split(",")

    assert "X-Auth-Token" in allowed_headers and "Content-Type" in allowed_headers
    assert "Idempotency-Key" in allowed_headers
    assert api["Cors"]["AllowOrigin"] == {"Fn::Sub": "'${CorsAllowOrigin}'"}
    assert api["Auth"]["AddDefaultAuthorizerToCorsPreflight"] is False
    assert TEMPLATE["Parameters"]["CorsAllowOrigin"]["Default"] == "*"


def test_every_gateway_response_carries_the_origin() -> None:
    responses = {
        resource["Properties"]["ResponseType"]: resource["Properties"].get("ResponseParameters") or {}
        for resource in TEMPLATE["Resources"].values()
        if resource["Type"] == "AWS::ApiGateway::GatewayResponse"
    }

    assert {"DEFAULT_4XX", "DEFAULT_5XX", "UNAUTHORIZED", "ACCESS_DENIED"} <= set(responses)
    missing = [kind for kind, parameters in responses.items() if ORIGIN_HEADER not in parameters]
    assert missing == []
    assert {str(parameters[ORIGIN_HEADER]) for parameters in responses.values()} == {
        str({"Fn::Sub": "'${CorsAllowOrigin}'"})
    }


def test_the_functions_get_the_origin() -> None:
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]

    assert variables["CORS_ALLOW_ORIGIN"] == {"Ref": "CorsAllowOrigin"}


@pytest.fixture(scope="module")
def front() -> ApiFront:
    template = load_template(ROOT / "template.yaml", {"CorsAllowOrigin": "https://console.cloud.invalid"})
    return ApiFront(template, NoFunctions())  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/v2/tasks", "/v2/tasks/abc/actions/cancel", "/v2/images/abc", "/versions"])
def test_the_local_front_answers_a_preflight_without_a_token(front: ApiFront, path: str) -> None:
    response = front.handle(
        "OPTIONS",
        path,
        [("Origin", "https://console.cloud.invalid"), ("Access-Control-Request-Headers", "x-auth-token")],
        b"",
    )

    assert response.status == 200
    assert response.header("Access-Control-Allow-Origin") == "https://console.cloud.invalid"
    assert "X-Auth-Token" in (response.header("Access-Control-Allow-Headers") or "")
    assert "POST" in (response.header("Access-Control-Allow-Methods") or "")


def test_the_local_front_sends_its_gateway_errors_with_the_origin(front: ApiFront) -> None:
    response = front.handle("GET", "/v2/tasks", [("Origin", "https://console.cloud.invalid")], b"")

    assert response.status == 401 and json.loads(response.body)["error"]["code"] == 401
    assert response.header("Access-Control-Allow-Origin") == "https://console.cloud.invalid"
