"""`first` and `next` on /v2/tasks and /v2/images: the request's own parameters, as Glance echoes them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import IMPORT_INPUT, api_event, call, load_handler


@pytest.fixture
def images_api(aws: dict[str, str]) -> Any:
    module = load_handler("images_api")
    module.images_table.cache_clear()
    return module


def test_a_bare_task_list_links_to_the_bare_path(tasks_api: Any) -> None:
    page = call(tasks_api, api_event("GET", "/v2/tasks"))["json"]

    assert page["first"] == "/v2/tasks" and "next" not in page


def test_task_links_carry_only_what_the_request_gave(tasks_api: Any) -> None:
    for _ in range(2):
        created = call(
            tasks_api, api_event("POST", "/v2/tasks", body={"type": "import", "input": IMPORT_INPUT})
        )
        assert created["statusCode"] == 201
    query = {"status": "pending", "limit": "1"}

    page = call(tasks_api, api_event("GET", "/v2/tasks", query=query))["json"]

    last = page["tasks"][-1]["id"]
    assert page["first"] == "/v2/tasks?status=pending&limit=1"
    assert page["next"] == f"/v2/tasks?status=pending&limit=1&marker={last}"


def test_a_followed_next_link_keeps_the_request_without_its_old_marker(tasks_api: Any) -> None:
    ids = []
    for _ in range(3):
        created = call(
            tasks_api, api_event("POST", "/v2/tasks", body={"type": "import", "input": IMPORT_INPUT})
        )
        ids.append(created["json"]["id"])

    page = call(tasks_api, api_event("GET", "/v2/tasks", query={"marker": ids[2], "limit": "1"}))["json"]

    assert page["first"] == "/v2/tasks?limit=1"
    assert page["next"] == f"/v2/tasks?limit=1&marker={ids[1]}"


@pytest.mark.parametrize(
    ("query", "first"),
    [
        (None, "/v2/images"),
        ({"visibility": "all", "limit": "5"}, "/v2/images?visibility=all&limit=5"),
        ({"sort": "name:asc"}, "/v2/images?sort=name%3Aasc"),
    ],
)
def test_image_links_carry_only_what_the_request_gave(
    images_api: Any, query: dict[str, str] | None, first: str
) -> None:
    page = call(images_api, api_event("GET", "/v2/images", query=query))["json"]

    assert page["first"] == first and "next" not in page
