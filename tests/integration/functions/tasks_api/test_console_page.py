"""GET /console: the task console's page, served without a token with a policy that lets only its
own script and style run; and the API's answers carrying the deployment's CORS origin."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from imagetasks.api import console
from imagetasks.domain.failures import ERROR_CODES
from tests.support import api_event, call, images_api_handler, tasks_api_handler


@pytest.fixture
def api(aws: dict[str, str]) -> Any:
    return tasks_api_handler()


def headers_of(response: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): values[-1] for name, values in response["multiValueHeaders"].items()}


def test_the_console_is_served_without_a_token_with_a_policy_naming_its_own_script_and_style(
    api: Any,
) -> None:
    response = call(api, api_event("GET", "/console", authorized=False))

    headers = headers_of(response)
    assert response["statusCode"] == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.split(" ", 1) for part in headers["content-security-policy"].split("; "))
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    [script] = re.findall(r"<script>(.*?)</script>", response["body"], re.DOTALL)
    assert policy["script-src"] == console._sha256_source(script)  # that script, and nothing else
    assert "unsafe" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_the_page_has_a_hint_for_every_documented_error_code(api: Any) -> None:
    body = call(api, api_event("GET", "/console", authorized=False))["body"]

    embedded = re.search(r'<script type="application/json" id="error-hints">(.*?)</script>', body, re.DOTALL)
    assert embedded is not None
    hints = json.loads(embedded.group(1))
    assert set(hints) == set(ERROR_CODES)
    assert all(hint["title"] and hint["hint"].endswith(".") for hint in hints.values())


def test_the_pages_script_never_writes_markup_from_data() -> None:
    script = console.PAGE.read_text(encoding="utf-8")

    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script
    assert "sessionStorage" in script and "localStorage" not in script


def test_the_console_is_documented_as_a_public_html_page(api: Any) -> None:
    document = call(api, api_event("GET", "/openapi.json", authorized=False))["json"]

    operation = document["paths"]["/console"]["get"]
    assert operation["security"] == []
    assert list(operation["responses"]["200"]["content"]) == ["text/html"]


@pytest.mark.parametrize("origin", ["*", "https://console.cloud.invalid"])
def test_every_answer_carries_the_deployments_origin(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, origin: str
) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", origin)

    tasks = call(tasks_api_handler(), api_event("GET", "/v2/tasks"))
    missing = call(tasks_api_handler(), api_event("GET", "/v2/tasks/not-a-task"))
    images = call(images_api_handler(), api_event("GET", "/v2/images"))

    assert [tasks["statusCode"], missing["statusCode"], images["statusCode"]] == [200, 404, 200]
    for response in (tasks, missing, images):
        headers = headers_of(response)
        assert headers["access-control-allow-origin"] == origin
        assert "x-openstack-request-id" in headers["access-control-expose-headers"]


def test_no_origin_configured_sends_no_cors_header(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "")

    response = call(tasks_api_handler(), api_event("GET", "/v2/tasks"))

    assert response["statusCode"] == 200
    assert "access-control-allow-origin" not in headers_of(response)
