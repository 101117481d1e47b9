"""Cancelling each task type while it waits for a slot (pending) and a web-download import while it
fetches (processing), and a web-download import that fails, on the local stack, where every function
runs under its own role as on AWS.

Processing-phase cancels of import, convert and export are in test_cancel_e2e.py and
test_cancel_convert_export_e2e.py. Here a clean-up refused by a role would show as what it leaves:
an image still `importing`, staged data, image bits or a multipart upload.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.e2e.test_cancel_e2e import cancel, running_slots
from tests.image_corpus import make_raw

PROJECT = "cancel-phases-project"
MAX_CONCURRENT = 2  # tests/e2e/conftest.py TEST_PARAMETERS


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def api(stack: Any, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, f"{stack.api_url}{path}", json=body, headers=stack.headers(PROJECT), timeout=30
    )


def queued_image(stack: Any) -> str:
    created = api(
        stack,
        "POST",
        "/v2/images",
        {"name": f"wd-{uuid.uuid4().hex[:8]}", "disk_format": "raw", "container_format": "bare"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def web_download(stack: Any, image_id: str, url: str) -> str:
    """Start a web-download import of `url` into the image; the id of the task it made (as a client
    finds it: the one new task under GET /v2/images/{id}/tasks)."""
    before = {task["id"] for task in api(stack, "GET", f"/v2/images/{image_id}/tasks").json()["tasks"]}
    started = api(
        stack, "POST", f"/v2/images/{image_id}/import", {"method": {"name": "web-download", "uri": url}}
    )
    assert started.status_code == 202, started.text
    tasks = api(stack, "GET", f"/v2/images/{image_id}/tasks").json()["tasks"]
    new = [task["id"] for task in tasks if task["id"] not in before]
    assert len(new) == 1, tasks
    return str(new[0])


def image_of(stack: Any, image_id: str) -> dict[str, Any]:
    answer = api(stack, "GET", f"/v2/images/{image_id}")
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def parked(stack: Any, task_id: str) -> bool:
    item = stack.client("dynamodb").get_item(
        TableName=stack.tables["TaskSlotsTable"], Key={"id": {"S": f"waiter#{task_id}"}}
    )
    return "Item" in item


def created_image_ids(stack: Any, task_id: str) -> tuple[str, ...]:
    """The (random) id of the image the task would create, as its stored task holds it (none for
    an interoperable import, which fills the image it was started for)."""
    item = stack.client("dynamodb").get_item(
        TableName=stack.tables["TasksTable"], Key={"id": {"S": task_id}}
    )["Item"]
    return (item["new_image_id"]["S"],) if "new_image_id" in item else ()


def assert_nothing_left(stack: Any, task_id: str, image_ids: tuple[str, ...]) -> None:
    """No staged data of the task, no bits of the images, no unfinished upload anywhere."""
    s3 = stack.client("s3")
    staging, images = stack.buckets["StagingBucket"], stack.buckets["ImagesBucket"]
    assert s3.list_objects_v2(Bucket=staging, Prefix=f"{task_id}/").get("KeyCount", 0) == 0
    for image_id in image_ids:
        assert s3.list_objects_v2(Bucket=images, Prefix=f"images/{image_id}").get("KeyCount", 0) == 0
    for bucket in (staging, images):
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert [u for u in uploads if task_id in u["Key"] or any(i in u["Key"] for i in image_ids)] == []


def assert_cancelled(finished: dict[str, Any]) -> None:
    assert finished["status"] == "failure"
    assert finished["error_code"] == "cancelled"
    assert finished["message"] == f"The task was cancelled by user {PROJECT}-user of project {PROJECT}."


def assert_queued_after_failed_import(image: dict[str, Any]) -> None:
    """Glance's marks of a failed interoperable import to its one store."""
    assert image["status"] == "queued"
    assert image["os_glance_failed_import"] == "default"
    assert image["os_glance_importing_to_stores"] == ""
    assert "os_glance_import_task" not in image
    assert image["size"] is None and image["checksum"] is None


@contextmanager
def slots_taken(stack: Any) -> Iterator[None]:
    """Every processing slot counted as taken (the counter the dispatcher reads), so that tasks
    created inside wait, parked, for a slot; given back when the block ends. No task holds them, so
    no step timeout can free one while a test looks at its waiting task."""

    def add(count: int) -> None:
        stack.client("dynamodb").update_item(
            TableName=stack.tables["TaskSlotsTable"],
            Key={"id": {"S": "task-slots"}},
            UpdateExpression="ADD running :n",
            ExpressionAttributeValues={":n": {"N": str(count)}},
        )

    add(MAX_CONCURRENT)
    try:
        yield
    finally:
        add(-MAX_CONCURRENT)


def imported_image(stack: Any, image_server: Any) -> str:
    raw = make_raw(image_server.root).rename(image_server.root / f"source-{uuid.uuid4().hex}.raw")
    task = create_task(stack, import_body(image_server.url(raw.name), "raw"), project=PROJECT)
    finished, _ = wait_for_task(stack, task["id"], project=PROJECT)
    assert finished["status"] == "success", finished["message"]
    return str(finished["result"]["image_id"])


@pytest.mark.artifact
def test_a_web_download_cancelled_while_it_fetches_queues_its_image_again(
    local_stack: Any, image_server: Any
) -> None:
    # Given a queued image and a web-download import into it whose source is held mid-fetch
    image_id = queued_image(local_stack)
    source = make_raw(image_server.root).rename(image_server.root / f"wd-held-{uuid.uuid4().hex}.raw")
    requested, release = image_server.hold(source.name)
    try:
        task_id = web_download(local_stack, image_id, image_server.url(source.name))
        assert requested.wait(60), "the import step never fetched its source"
        assert image_of(local_stack, image_id)["status"] == "importing"

        # When its owner cancels the task listed under the image
        answer = cancel(local_stack, task_id, project=PROJECT)
        assert answer.status_code == 202, answer.text
        finished, _ = wait_for_task(local_stack, task_id, project=PROJECT, timeout=60)
    finally:
        release.set()

    # Then the task failed as cancelled, the image is queued again with Glance's failed-import
    # marks, and nothing of the import is left in any bucket
    assert_cancelled(finished)
    wait_until(lambda: image_of(local_stack, image_id)["status"] != "importing", "the image stayed importing")
    assert_queued_after_failed_import(image_of(local_stack, image_id))
    wait_until(lambda: running_slots(local_stack) == 0, "the slot was not given back")
    assert_nothing_left(local_stack, task_id, (image_id, *created_image_ids(local_stack, task_id)))

    # And a second import of the same image works
    again = web_download(local_stack, image_id, image_server.url(source.name))
    assert again != task_id
    second, _ = wait_for_task(local_stack, again, project=PROJECT, timeout=90)
    assert second["status"] == "success", second["message"]
    image = image_of(local_stack, image_id)
    assert image["status"] == "active"
    assert image["size"] == source.stat().st_size
    assert image["os_glance_failed_import"] == ""


def test_a_web_download_that_fails_queues_its_image_again_from_the_workflow(
    local_stack: Any, image_server: Any
) -> None:
    # Given a queued image, and a web-download import of a source that is not there
    image_id = queued_image(local_stack)
    task_id = web_download(local_stack, image_id, image_server.url(f"missing-{uuid.uuid4().hex}.raw"))

    # When the import fails (the workflow records the failure and cleans up)
    finished, _ = wait_for_task(local_stack, task_id, project=PROJECT, timeout=60)

    # Then the image is queued again with Glance's failed-import marks, and nothing is left
    assert finished["status"] == "failure" and finished["error_code"] != "cancelled"
    wait_until(lambda: image_of(local_stack, image_id)["status"] != "importing", "the image stayed importing")
    assert_queued_after_failed_import(image_of(local_stack, image_id))
    assert_nothing_left(local_stack, task_id, (image_id, *created_image_ids(local_stack, task_id)))


@pytest.mark.parametrize("task_type", ["import", "web-download", "convert", "export"])
def test_a_task_cancelled_while_it_waits_for_a_slot_ends_and_leaves_nothing(
    local_stack: Any, image_server: Any, task_type: str
) -> None:
    # Given a task of each type waiting (parked) for a slot while both slots are taken
    source = make_raw(image_server.root).rename(image_server.root / f"pending-{uuid.uuid4().hex}.raw")
    image_id = imported_image(local_stack, image_server) if task_type in ("convert", "export") else ""
    target = queued_image(local_stack) if task_type == "web-download" else ""
    with slots_taken(local_stack):
        if task_type == "import":
            task_id = create_task(local_stack, import_body(image_server.url(source.name), "raw"), PROJECT)[
                "id"
            ]
        elif task_type == "web-download":
            task_id = web_download(local_stack, target, image_server.url(source.name))
        else:
            body = {"type": task_type, "input": {"image_id": image_id, "disk_format": "qcow2"}}
            task_id = create_task(local_stack, body, PROJECT)["id"]
        wait_until(lambda: parked(local_stack, task_id), "the task's execution never parked for a slot")
        assert api(local_stack, "GET", f"/v2/tasks/{task_id}").json()["status"] == "pending"

        # When its owner cancels it
        answer = cancel(local_stack, task_id, project=PROJECT)
        assert answer.status_code == 202, answer.text
        finished, _ = wait_for_task(local_stack, task_id, project=PROJECT, timeout=30)

        # Then it failed as cancelled without taking a slot, and its parked execution is let go
        assert_cancelled(finished)
        assert running_slots(local_stack) == MAX_CONCURRENT
        wait_until(lambda: not parked(local_stack, task_id), "the parked execution was never let go")
    assert running_slots(local_stack) == 0
    # Nothing of it anywhere, and its execution ended
    created = created_image_ids(local_stack, task_id)
    assert_nothing_left(local_stack, task_id, (*created, *([target] if target else [])))
    for image in created:
        assert api(local_stack, "GET", f"/v2/images/{image}").status_code == 404
    if target:
        wait_until(
            lambda: image_of(local_stack, target)["status"] != "importing", "the image stayed importing"
        )
        assert_queued_after_failed_import(image_of(local_stack, target))
    execution = local_stack.state_machines["TaskWorkflow"].replace(":stateMachine:", ":execution:")
    status = local_stack.client("stepfunctions").describe_execution(executionArn=f"{execution}:{task_id}")
    assert status["status"] == "ABORTED"


@pytest.mark.parametrize("task_type", ["import", "web-download"])
def test_a_pending_task_whose_parked_execution_already_ended_is_cancelled(
    local_stack: Any, image_server: Any, monkeypatch: pytest.MonkeyPatch, task_type: str
) -> None:
    # Given a task parked for a slot whose execution then ended without the reconciler hearing of it
    # (its event not delivered yet): the task is still pending, its parked row still there
    source = make_raw(image_server.root).rename(image_server.root / f"ended-{uuid.uuid4().hex}.raw")
    target = queued_image(local_stack) if task_type == "web-download" else ""
    with slots_taken(local_stack):
        if target:
            task_id = web_download(local_stack, target, image_server.url(source.name))
        else:
            task_id = create_task(local_stack, import_body(image_server.url(source.name), "raw"), PROJECT)[
                "id"
            ]
        wait_until(lambda: parked(local_stack, task_id), "the task's execution never parked for a slot")
        monkeypatch.setattr(local_stack.stack, "publish_execution_events", lambda: 0)
        execution = local_stack.state_machines["TaskWorkflow"].replace(":stateMachine:", ":execution:")
        sfn = local_stack.client("stepfunctions")
        sfn.stop_execution(executionArn=f"{execution}:{task_id}", error="Test", cause="ended elsewhere")
        assert sfn.describe_execution(executionArn=f"{execution}:{task_id}")["status"] == "ABORTED"
        assert api(local_stack, "GET", f"/v2/tasks/{task_id}").json()["status"] == "pending"

        # When its owner cancels it
        answer = cancel(local_stack, task_id, project=PROJECT)

        # Then the API ends the task itself: 202, cancelled (and a web-download's image queued
        # again before that, under the API's own role)
        assert answer.status_code == 202, answer.text
        finished = api(local_stack, "GET", f"/v2/tasks/{task_id}").json()
        assert_cancelled(finished)
        assert running_slots(local_stack) == MAX_CONCURRENT
        if target:
            assert_queued_after_failed_import(image_of(local_stack, target))
        monkeypatch.undo()
        # The parked row of the ended execution goes with the next sweep
        rule = next(rule for rule in local_stack.stack.template.event_rules if rule.schedule_seconds)
        local_stack.stack.run_schedule(rule)
        assert not parked(local_stack, task_id)


def test_a_task_whose_execution_ended_unheard_is_ended_by_the_sweeper_with_its_cancel(
    local_stack: Any, image_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a web-download import held mid-fetch whose execution is then stopped by hand, its status
    # change never reaching the reconciler (an event lost, or its retries spent)
    image_id = queued_image(local_stack)
    source = make_raw(image_server.root).rename(image_server.root / f"unheard-{uuid.uuid4().hex}.raw")
    requested, release = image_server.hold(source.name)
    try:
        task_id = web_download(local_stack, image_id, image_server.url(source.name))
        assert requested.wait(60), "the import step never fetched its source"
        monkeypatch.setattr(local_stack.stack, "publish_execution_events", lambda: 0)
        execution = local_stack.state_machines["TaskWorkflow"].replace(":stateMachine:", ":execution:")
        sfn = local_stack.client("stepfunctions")
        sfn.stop_execution(executionArn=f"{execution}:{task_id}", error="Operator", cause="stopped by hand")
        assert api(local_stack, "GET", f"/v2/tasks/{task_id}").json()["status"] == "processing"

        # When its owner cancels it (no execution runs to stop: the API records the cancel and
        # leaves the end to the execution's event), and the reconciler's minute sweep runs
        answer = cancel(local_stack, task_id, project=PROJECT)
        assert answer.status_code == 202, answer.text
        assert api(local_stack, "GET", f"/v2/tasks/{task_id}").json()["status"] == "processing"
        rule = next(rule for rule in local_stack.stack.template.event_rules if rule.schedule_seconds)
        swept = local_stack.stack.run_schedule(rule)
    finally:
        release.set()
        monkeypatch.undo()

    # Then the sweeper ended it as that cancel, under the reconciler's own role: its image queued
    # again, its slot given back, nothing of it left once its step saw it final
    assert swept["ended"] == 1, swept
    assert_cancelled(api(local_stack, "GET", f"/v2/tasks/{task_id}").json())
    assert_queued_after_failed_import(image_of(local_stack, image_id))
    wait_until(lambda: running_slots(local_stack) == 0, "the slot was not given back")
    wait_until(
        lambda: local_stack.stack.runner.running("ImportTaskFunction") == 0, "the held step never ended"
    )
    assert_nothing_left(local_stack, task_id, (image_id, *created_image_ids(local_stack, task_id)))
