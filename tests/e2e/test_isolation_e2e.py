"""Tenant isolation over HTTP: project B never sees project A's tasks or images; the admin sees both."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import make_qcow2, require_qemu_img

A, B, ADMIN = "iso-project-a", "iso-project-b", "iso-admin"


@pytest.fixture(scope="module")
def a_resources(local_stack: Any, image_server: Any, tmp_path_factory: Any) -> dict[str, str]:
    """A finished import of project A: its task and its image."""
    require_qemu_img()
    image = make_qcow2(image_server.root)
    task = create_task(local_stack, import_body(image_server.url(image.name), "qcow2"), project=A)
    finished, _ = wait_for_task(local_stack, task["id"], project=A)
    assert finished["status"] == "success", finished["message"]
    return {"task": task["id"], "image": finished["result"]["image_id"]}


def get(
    stack: Any,
    path: str,
    project: str,
    roles: tuple[str, ...] = ("member",),
    headers: dict[str, str] | None = None,
) -> requests.Response:
    return requests.get(
        f"{stack.api_url}{path}",
        headers={**stack.headers(project, roles), **(headers or {})},
        timeout=30,
        allow_redirects=False,
    )


ID_PATHS = ["/v2/tasks/{task}", "/v2/images/{image}", "/v2/images/{image}/file", "/v2/images/{image}/tasks"]


@pytest.mark.parametrize("template", ID_PATHS)
def test_another_project_gets_404_for_every_resource_by_id_and_the_admin_sees_it(
    local_stack: Any, a_resources: dict[str, str], template: str
) -> None:
    path = template.format(**a_resources)

    owner = get(local_stack, path, A)
    other = get(local_stack, path, B)
    forged = get(local_stack, path, B, headers={"X-Project-Id": A, "X-Roles": "admin", "X-User-Id": "a-user"})
    admin = get(local_stack, path, ADMIN, roles=("admin",))

    assert owner.status_code in (200, 302)
    assert other.status_code == 404 and other.json()["error"]["code"] == 404
    assert forged.status_code == 404
    assert admin.status_code == owner.status_code


def test_another_project_cannot_delete_the_image(local_stack: Any, a_resources: dict[str, str]) -> None:
    response = requests.delete(
        f"{local_stack.api_url}/v2/images/{a_resources['image']}", headers=local_stack.headers(B), timeout=30
    )

    assert response.status_code == 404
    assert get(local_stack, f"/v2/images/{a_resources['image']}", A).status_code == 200


LIST_QUERIES = [
    {},
    {"status": "success"},
    {"type": "import"},
    {"owner": A},
    {"sort_key": "status", "sort_dir": "asc"},
    {"sort_key": "updated_at"},
    {"sort_key": "expires_at", "sort_dir": "asc"},
    {"sort_key": "id"},
    {"sort_key": "type"},
    {"sort_key": "owner"},
]


@pytest.mark.parametrize(
    "query", LIST_QUERIES, ids=lambda q: ",".join(f"{k}={v}" for k, v in q.items()) or "default"
)
def test_lists_show_b_nothing_of_a_and_show_the_admin_everything(
    local_stack: Any, a_resources: dict[str, str], query: dict[str, str]
) -> None:
    params = "&".join(f"{k}={v}" for k, v in query.items())

    for_b = get(local_stack, f"/v2/tasks?{params}", B).json()["tasks"]
    for_a = get(local_stack, f"/v2/tasks?{params}", A).json()["tasks"]
    for_admin = get(local_stack, f"/v2/tasks?{params}&limit=1000", ADMIN, roles=("admin",)).json()["tasks"]
    forged = get(
        local_stack, f"/v2/tasks?{params}", B, headers={"X-Project-Id": A, "X-Roles": "admin"}
    ).json()["tasks"]

    assert a_resources["task"] not in [t["id"] for t in for_b]
    assert a_resources["task"] not in [t["id"] for t in forged]
    assert all(t["owner"] == B for t in for_b + forged)
    assert a_resources["task"] in [t["id"] for t in for_a]
    assert a_resources["task"] in [t["id"] for t in for_admin]


def test_image_lists_are_scoped_and_admins_see_all(local_stack: Any, a_resources: dict[str, str]) -> None:
    for_b = get(local_stack, "/v2/images", B).json()["images"]
    for_a = get(local_stack, "/v2/images?limit=1000", A).json()["images"]
    for_admin = get(local_stack, "/v2/images?limit=1000", ADMIN, roles=("admin",)).json()["images"]

    assert a_resources["image"] not in [i["id"] for i in for_b]
    assert a_resources["image"] in [i["id"] for i in for_a]
    assert a_resources["image"] in [i["id"] for i in for_admin]


@pytest.mark.parametrize("collection", ["tasks", "images"])
def test_a_marker_taken_from_another_project_is_refused(
    local_stack: Any, a_resources: dict[str, str], collection: str
) -> None:
    marker = a_resources["task" if collection == "tasks" else "image"]

    response = get(local_stack, f"/v2/{collection}?marker={marker}", B)

    assert response.status_code == 400
    assert marker in response.json()["error"]["message"]


def test_no_token_is_401_and_a_bad_token_is_401_with_a_nested_error(local_stack: Any) -> None:
    missing = requests.get(f"{local_stack.api_url}/v2/tasks", timeout=30)
    bad = requests.get(
        f"{local_stack.api_url}/v2/tasks", headers={"X-Auth-Token": "forged.jwt.token"}, timeout=30
    )

    assert missing.status_code == 401 and missing.json()["error"]["code"] == 401
    assert bad.status_code == 401 and bad.json()["error"]["code"] == 401
