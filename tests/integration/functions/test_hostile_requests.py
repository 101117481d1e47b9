"""Request headers and paths a client controls (issue #23): Location and version links come from the
deployment's base URL or API Gateway's own domain, never from Host or X-Forwarded-*; tags of any
Unicode text Glance accepts round-trip through the tag path, and encoded control characters or a
web-download URI holding CR LF are a 400 naming what to fix."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from tests.support import CREATE_IMAGE, IMPORT_INPUT, api_event, call, create_image, header, show

EVIL = {"Host": "evil.example", "X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "evil.example"}
OWN = "https://abcdef1234.execute-api.us-east-1.amazonaws.com/v1"


def test_location_of_a_task_ignores_host_and_forwarded_headers(tasks_api: Any) -> None:
    event = api_event("POST", "/v2/tasks", body={"type": "import", "input": IMPORT_INPUT}, headers=EVIL)
    response = call(tasks_api, event)
    assert response["statusCode"] == 201
    assert header(response, "Location") == f"{OWN}/v2/tasks/{response['json']['id']}"


def test_location_of_an_image_ignores_host_and_forwarded_headers(images: Any) -> None:
    response = call(images, api_event("POST", "/v2/images", body=CREATE_IMAGE, headers=EVIL))
    assert response["statusCode"] == 201
    assert header(response, "Location") == f"{OWN}/v2/images/{response['json']['id']}"


@pytest.mark.parametrize("path", ["/", "/versions", "/v2"])
def test_version_links_ignore_host_and_forwarded_headers(tasks_api: Any, path: str) -> None:
    response = call(tasks_api, api_event("GET", path, authorized=False, headers=EVIL))
    hrefs = {link["href"] for version in response["json"]["versions"] for link in version["links"]}
    assert hrefs == {f"{OWN}/v2/"}


@pytest.mark.parametrize(
    "domain", ["evil.example/x", "javascript:alert(1)", "a b", "", None, "host:port:80", "x@evil.example"]
)
def test_an_unusable_domain_name_in_the_context_never_makes_a_link(tasks_api: Any, domain: Any) -> None:
    event = api_event("GET", "/versions", authorized=False, headers=EVIL)
    event["requestContext"]["domainName"] = domain
    href = call(tasks_api, event)["json"]["versions"][0]["links"][0]["href"]
    assert href == "http://localhost/v1/v2/"  # (what the local stack is; never the headers)


def test_a_configured_base_url_is_what_links_start_with(
    tasks_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://images.cloud.invalid/")
    response = call(tasks_api, api_event("GET", "/versions", authorized=False, headers=EVIL))
    assert response["json"]["versions"][0]["links"][0]["href"] == "https://images.cloud.invalid/v2/"


def tag_event(method: str, image_id: str, tag: str, *, gateway_decodes: bool) -> dict[str, Any]:
    """A tag request as API Gateway sends it: the path percent-encoded, `pathParameters` decoded
    (or, `gateway_decodes=False`, a path parameter left to the handler to decode)."""
    encoded = quote(tag, safe="")
    event = api_event(method, f"/v2/images/{image_id}/tags/{encoded}")
    event["pathParameters"] = {"image_id": image_id, "tag": tag} if gateway_decodes else None
    return event


@pytest.mark.parametrize(
    "tag",
    ["\u20ac", "\U0001f600", "caf\u00e9", "a b", "100%", "%25", "a/b", "\u20ac" * 255, "x" * 255],
    ids=["euro", "emoji", "accent", "space", "percent", "encoded-looking", "slash", "euro-255", "ascii-255"],
)
@pytest.mark.parametrize("gateway_decodes", [True, False], ids=["path-parameters", "path-only"])
def test_any_unicode_tag_round_trips_through_the_tag_path(
    images: Any, tag: str, gateway_decodes: bool
) -> None:
    created = create_image(images)
    added = call(images, tag_event("PUT", created["id"], tag, gateway_decodes=gateway_decodes))
    assert added["statusCode"] == 204, added["body"]
    assert tag in show(images, created["id"])["tags"]
    removed = call(images, tag_event("DELETE", created["id"], tag, gateway_decodes=gateway_decodes))
    assert removed["statusCode"] == 204, removed["body"]
    assert tag not in show(images, created["id"])["tags"]


@pytest.mark.parametrize(
    "tag", ["\r\n", "a\nb", "\x00", "\x7f", "x" * 256], ids=["crlf", "lf", "nul", "del", "256"]
)
def test_a_tag_glance_would_not_store_is_400_naming_tags(images: Any, tag: str) -> None:
    created = create_image(images)
    response = call(images, tag_event("PUT", created["id"], tag, gateway_decodes=True))
    assert response["statusCode"] == 400, response["body"]
    assert "tags" in response["json"]["error"]["message"]
    assert show(images, created["id"]) == created


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1/x\r\nHost: evil.invalid",
        "http://127.0.0.1/x\n",
        "http://127.0.0.1:80:80/x",
        "http://127.0.0.1/\udc80",
    ],
    ids=["crlf", "trailing-lf-inside", "two-ports", "surrogate"],
)
def test_a_web_download_uri_that_is_not_a_url_is_400_and_the_image_stays_queued(
    images: Any, uri: str
) -> None:
    created = create_image(images)
    event = api_event("POST", f"/v2/images/{created['id']}/import")
    event["body"] = json.dumps({"method": {"name": "web-download", "uri": uri}})
    response = call(images, event)
    assert response["statusCode"] == 400, response["body"]
    assert show(images, created["id"])["status"] == "queued"
