"""Small HTTP helpers for end-to-end tests against the local stack."""

from __future__ import annotations

import time
from typing import Any

import requests

FINAL = ("success", "failure")


def create_task(
    stack: Any, body: dict[str, Any], project: str = "demo-project", roles: tuple[str, ...] = ("member",)
) -> dict[str, Any]:
    response = requests.post(
        f"{stack.api_url}/v2/tasks", json=body, headers=stack.headers(project, roles), timeout=30
    )
    assert response.status_code == 201, response.text
    return response.json()


def import_body(url: str, disk_format: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "import",
        "input": {
            "import_from": url,
            "import_from_format": disk_format,
            "image_properties": {
                "name": f"test-{disk_format}",
                "disk_format": disk_format,
                "container_format": "bare",
            },
            **extra,
        },
    }


def wait_for_task(
    stack: Any, task_id: str, project: str = "demo-project", timeout: float = 90
) -> tuple[dict[str, Any], list[str]]:
    """Poll until the task is final; returns it and the statuses seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = requests.get(
            f"{stack.api_url}/v2/tasks/{task_id}", headers=stack.headers(project), timeout=30
        ).json()
        if not seen or seen[-1] != task["status"]:
            seen.append(task["status"])
        if task["status"] in FINAL:
            return task, seen
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish in {timeout} s; statuses seen: {seen}")


def sdk_connection(stack: Any, project: str) -> Any:
    """openstacksdk as a user configures it: the API URL followed by /v2, a project's token."""
    import openstack

    return openstack.connection.Connection(
        auth_type="admin_token",
        auth={"endpoint": f"{stack.api_url}/v2", "token": stack.token(project)},
        image_api_version="2",
    )
