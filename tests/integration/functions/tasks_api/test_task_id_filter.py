"""GET /v2/tasks?id=<id>: Glance's id filter (an exact id; Glance has no `in:` form for tasks)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import IMPORT_INPUT, api_event, call


def create(api: Any, project: str = "project-a") -> str:
    response = call(
        api, api_event("POST", "/v2/tasks", body={"type": "import", "input": IMPORT_INPUT}, project=project)
    )
    assert response["statusCode"] == 201
    return str(response["json"]["id"])


def listed(api: Any, query: dict[str, str], project: str = "project-a", roles: str = "member") -> list[str]:
    response = call(api, api_event("GET", "/v2/tasks", query=query, project=project, roles=roles))
    assert response["statusCode"] == 200, response["body"]
    return [task["id"] for task in response["json"]["tasks"]]


def test_the_id_filter_lists_only_that_task(api: Any) -> None:
    wanted, _ = create(api), create(api)

    assert listed(api, {"id": wanted}) == [wanted]
    assert listed(api, {"id": wanted, "status": "pending", "type": "import"}) == [wanted]


def test_the_id_filter_never_shows_what_the_rest_of_the_request_excludes(api: Any) -> None:
    own, foreign = create(api), create(api, project="project-b")

    assert listed(api, {"id": foreign}) == []
    assert listed(api, {"id": own, "status": "success"}) == []
    assert listed(api, {"id": own, "limit": "0"}) == []
    assert listed(api, {"id": foreign}, project="project-c", roles="admin") == [foreign]


@pytest.mark.parametrize("value", ["in:{own}", "not-a-uuid", "x" * 3000, ""])
def test_an_id_that_names_no_task_lists_nothing(api: Any, value: str) -> None:
    own = create(api)

    assert listed(api, {"id": value.format(own=own)}) == []
