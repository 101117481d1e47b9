"""The served schemas say what Glance 2.17's say, in its words and shape (differences: docs/api.md)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import api_event, call, load_handler


@pytest.fixture
def tasks_api(aws: dict[str, str]) -> Any:
    return load_handler("tasks_api")


@pytest.fixture
def images_api(aws: dict[str, str]) -> Any:
    return load_handler("images_api")


def served(api: Any, name: str) -> dict[str, Any]:
    response = call(api, api_event("GET", f"/v2/schemas/{name}"))
    assert response["statusCode"] == 200
    return dict(response["json"])


def test_the_task_schema_has_glances_properties_in_its_order_and_words(tasks_api: Any) -> None:
    schema = served(tasks_api, "task")

    assert set(schema) == {"name", "properties"}
    assert list(schema["properties"]) == [
        "id", "type", "status", "input", "result", "owner", "message", "image_id", "request_id",
        "user_id", "expires_at", "created_at", "updated_at", "self", "schema",
        "error_code", "progress",  # this service's additions, after Glance's (docs/api.md)
    ]  # fmt: skip
    properties = schema["properties"]
    assert properties["message"]["description"] == (
        "Human-readable informative message only included when appropriate (usually on failure)"
    )
    assert properties["image_id"]["description"] == "Image associated with the task"
    assert properties["request_id"]["description"] == "Human-readable informative request-id"
    assert properties["user_id"]["description"] == "User associated with the task"
    assert (
        properties["expires_at"]["description"] == "Datetime when this resource would be subject to removal"
    )


def test_the_task_list_items_are_the_task_without_its_details(tasks_api: Any) -> None:
    task = served(tasks_api, "task")["properties"]

    items = served(tasks_api, "tasks")["properties"]["tasks"]["items"]

    assert items["properties"] == {
        k: v for k, v in task.items() if k not in ("input", "result", "message", "error_code", "progress")
    }


def test_the_image_schemas_have_glances_shape(images_api: Any) -> None:
    image = served(images_api, "image")
    images = served(images_api, "images")

    assert image["additionalProperties"] == {"type": "string"}
    assert [link["rel"] for link in image["links"]] == ["self", "enclosure", "describedby"]
    assert images["properties"]["images"]["items"] == image
    assert list(images["properties"]) == ["images", "first", "next", "schema"]
    assert [link["rel"] for link in images["links"]] == ["first", "next", "describedby"]
    properties = image["properties"]
    assert properties["checksum"]["maxLength"] == 32 and properties["os_hash_value"]["maxLength"] == 128
    assert properties["disk_format"]["enum"][0] is None and "qcow2" in properties["disk_format"]["enum"]
    assert (
        properties["container_format"]["enum"][0] is None and "bare" in properties["container_format"]["enum"]
    )
    assert properties["locations"]["items"]["required"] == ["url", "metadata"]
    assert {"direct_url", "stores"} <= set(properties)
