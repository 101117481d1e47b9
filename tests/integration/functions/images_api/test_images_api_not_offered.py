"""Routes of Glance's image API this service does not offer: the answer says so, it is no bare
"not found"."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import api_event, call


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/metadefs/namespaces"),  # glance md-namespace-list
        ("GET", "/v2/metadefs/namespaces/OS::Compute::Hypervisor"),
        ("POST", "/v2/metadefs/namespaces/ns/objects"),
        ("DELETE", "/v2/metadefs/namespaces/ns/properties/p"),
        ("GET", "/v2/metadefs/resource_types"),
        ("GET", "/v2/metadefs"),
        ("GET", "/v2/schemas/metadefs/namespace"),  # what glanceclient reads before an md-* call
    ],
)
def test_metadefs_paths_are_a_404_saying_the_api_is_not_offered(images: Any, method: str, path: str) -> None:
    # When a client asks for Glance's metadata definitions
    response = call(images, api_event(method, path))

    # Then the 404 says that this service does not offer that API, in Glance's error shape
    assert response["statusCode"] == 404
    error = response["json"]["error"]
    assert error["code"] == 404 and error["title"] == "Not Found"
    assert error["message"].startswith("The metadata definitions API (/v2/metadefs")
    assert "is not offered by this service" in error["message"]


def test_other_unknown_paths_keep_the_plain_not_found(images: Any) -> None:
    response = call(images, api_event("GET", "/v2/metadefsx"))

    assert response["statusCode"] == 404
    assert response["json"]["error"]["message"] == "The resource could not be found."


def test_the_template_sends_every_metadefs_path_to_the_images_function(local_template: Any) -> None:
    routes = {route.path: route.function_logical_id for route in local_template.routes}

    for path in ("/v2/metadefs", "/v2/metadefs/{proxy+}", "/v2/schemas/metadefs/{proxy+}"):
        assert routes[path] == "ImagesApiFunction"
