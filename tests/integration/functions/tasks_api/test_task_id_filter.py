"""GET /v2/tasks?id=<id>: Glance's id filter (an exact id; Glance has no `in:` form for tasks)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import api_event, call, create_task


def listed(api: Any, query: dict[str, str], project: str = "project-a", roles: str = "member") -> list[str]:
    response = call(api, api_event("GET", "/v2/tasks", query=query, project=project, roles=roles))
    assert response["statusCode"] == 200, response["body"]
    return [task["id"] for task in response["json"]["tasks"]]


def test_the_id_filter_lists_only_that_task(api: Any) -> None:
    wanted, _ = create_task(api)["id"], create_task(api)["id"]

    assert listed(api, {"id": wanted}) == [wanted]
    assert listed(api, {"id": wanted, "status": "pending", "type": "import"}) == [wanted]


def test_the_id_filter_never_shows_what_the_rest_of_the_request_excludes(api: Any) -> None:
    own, foreign = create_task(api)["id"], create_task(api, project="project-b")["id"]

    assert listed(api, {"id": foreign}) == []
    assert listed(api, {"id": own, "status": "success"}) == []
    assert listed(api, {"id": own, "limit": "0"}) == []
    assert listed(api, {"id": foreign}, project="project-c", roles="admin") == [foreign]


@pytest.mark.parametrize("value", ["in:{own}", "not-a-uuid", "x" * 3000, ""])
def test_an_id_that_names_no_task_lists_nothing(api: Any, value: str) -> None:
    own = create_task(api)["id"]

    assert listed(api, {"id": value.format(own=own)}) == []
