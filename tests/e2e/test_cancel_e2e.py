"""Cancelling a task: POST /v2/tasks/{id}/actions/cancel on the local stack, with a source held mid-fetch."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import make_raw

PROJECT = "cancel-project"


def cancel(stack: Any, task_id: str, project: str = PROJECT, roles: tuple[str, ...] = ("member",)) -> Any:
    return requests.post(
        f"{stack.api_url}/v2/tasks/{task_id}/actions/cancel",
        headers=stack.headers(project, roles),
        timeout=30,
    )


def running_slots(stack: Any) -> int:
    item = stack.client("dynamodb").get_item(
        TableName=stack.tables["TaskSlotsTable"], Key={"id": {"S": "task-slots"}}
    )["Item"]
    return int(item["running"]["N"])


@pytest.mark.artifact
def test_a_processing_task_is_cancelled_says_by_whom_and_leaves_nothing(
    local_stack: Any, image_server: Any
) -> None:
    held = make_raw(image_server.root).rename(image_server.root / "cancel-held.raw")
    requested, release = image_server.hold(held.name)
    try:
        task = create_task(local_stack, import_body(image_server.url(held.name), "raw"), project=PROJECT)
        assert requested.wait(60), "the import step never fetched its source"

        answer = cancel(local_stack, task["id"])
        assert answer.status_code == 202, answer.text
        assert answer.json()["id"] == task["id"]
    finally:
        release.set()
    finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT)

    assert finished["status"] == "failure"
    assert finished["error_code"] == "cancelled"
    assert finished["message"] == f"The task was cancelled by user {PROJECT}-user of project {PROJECT}."
    assert finished["result"] is None
    # Nothing left: no image, nothing staged, the slot given back (the late step's writes are refused)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and running_slots(local_stack) != 0:
        time.sleep(0.2)
    assert running_slots(local_stack) == 0
    images = requests.get(
        f"{local_stack.api_url}/v2/images", headers=local_stack.headers(PROJECT), timeout=30
    ).json()["images"]
    assert [image for image in images if image["owner"] == PROJECT] == []  # (others' public ones show)
    staged = local_stack.client("s3").list_objects_v2(
        Bucket=local_stack.buckets["StagingBucket"], Prefix=f"{task['id']}/"
    )
    assert staged.get("KeyCount", 0) == 0
    # A final task cannot be cancelled again
    again = cancel(local_stack, task["id"])
    assert again.status_code == 409 and "cannot be cancelled" in again.json()["error"]["message"]


def test_only_the_owner_project_or_an_admin_may_cancel(local_stack: Any, image_server: Any) -> None:
    held = make_raw(image_server.root).rename(image_server.root / "cancel-admin.raw")
    requested, release = image_server.hold(held.name)
    try:
        task = create_task(local_stack, import_body(image_server.url(held.name), "raw"), project=PROJECT)
        assert requested.wait(60)

        other = cancel(local_stack, task["id"], project="someone-else")
        by_admin = cancel(local_stack, task["id"], project="ops", roles=("member", "admin"))
    finally:
        release.set()
    finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT)

    assert other.status_code == 404
    assert by_admin.status_code == 202
    assert finished["error_code"] == "cancelled" and "user ops-user of project ops" in finished["message"]


def test_cancel_of_an_unknown_task_is_404_and_other_methods_405(local_stack: Any) -> None:
    assert cancel(local_stack, "00000000-0000-0000-0000-000000000000").status_code == 404
    answer = requests.get(
        f"{local_stack.api_url}/v2/tasks/00000000-0000-0000-0000-000000000000/actions/cancel",
        headers=local_stack.headers(PROJECT),
        timeout=30,
    )
    assert answer.status_code == 405
