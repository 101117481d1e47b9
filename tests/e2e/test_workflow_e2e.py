"""The workflow on the real state machine: processing slots, faults, retries and reconciliation."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests

from imagetasks.adapters.dynamo import Guard
from imagetasks.adapters.images_table import ImagesTable
from imagetasks.domain.errors import TaskNotProcessing
from imagetasks.domain.images import Image
from imagetasks.domain.import_errors import TransientStorageError
from imagetasks.services.import_task import ImportTask
from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import make_raw
from tests.support import created_image_id

MAX_CONCURRENT = 2  # tests/e2e/conftest.py TEST_PARAMETERS


def history(stack: Any, task_id: str) -> list[dict[str, Any]]:
    arn = stack.state_machines["TaskWorkflow"].replace(":stateMachine:", ":execution:") + f":{task_id}"
    sfn = stack.stack.sfn_client() if hasattr(stack.stack, "sfn_client") else stack.client("stepfunctions")
    return sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]


def processing_interval(events: list[dict[str, Any]]) -> tuple[float, float]:
    """Within the time the task held its slot: from its parked TakeSlot being resumed as started
    (the slot was taken just before) until RecordSuccess is entered (the slot is given back, and
    handed on, during RecordSuccess)."""
    start = end = None
    for event in events:
        exited = event.get("stateExitedEventDetails") or {}
        entered = event.get("stateEnteredEventDetails") or {}
        if (
            event["type"] == "TaskStateExited"
            and exited.get("name") == "TakeSlot"
            and json.loads(exited.get("output", "{}"))["slot"]["started"]
        ):
            start = event["timestamp"].timestamp()
        if event["type"] == "TaskStateEntered" and entered.get("name") == "RecordSuccess":
            end = event["timestamp"].timestamp()
    assert start is not None and end is not None, "the execution history lacks its slot or its end"
    return start, end


def wait_until_waiting(stack: Any, task_id: str, project: str, timeout: float = 30) -> None:
    """Until the task's execution has parked for a slot, or the task has one."""
    dynamodb = stack.client("dynamodb")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parked = dynamodb.get_item(
            TableName=stack.tables["TaskSlotsTable"], Key={"id": {"S": f"waiter#{task_id}"}}
        ).get("Item")
        status = requests.get(
            f"{stack.api_url}/v2/tasks/{task_id}", headers=stack.headers(project), timeout=30
        ).json()["status"]
        if parked or status != "pending":
            return
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} neither parked nor started in {timeout} s")


def test_many_tasks_never_exceed_the_slot_limit_start_in_order_and_all_finish(
    local_stack: Any, image_server: Any
) -> None:
    image = make_raw(image_server.root)
    running_seen: list[int] = []
    stop = threading.Event()
    slots_table = local_stack.tables["TaskSlotsTable"]
    dynamodb = local_stack.client("dynamodb")

    def sample_slots() -> None:
        while not stop.is_set():
            item = dynamodb.get_item(TableName=slots_table, Key={"id": {"S": "task-slots"}}).get("Item")
            running_seen.append(int(item["running"]["N"]) if item else 0)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample_slots, daemon=True)
    sampler.start()
    tasks = []
    for _ in range(5):  # two run, three wait: parking and the order slots are handed out in
        tasks.append(
            create_task(
                local_stack, import_body(image_server.url(image.name), "raw"), project="slots-project"
            )
        )
        # Each waits where it should (started or parked) before the next comes: the waiters' order
        # is then the creation order, and the order slots are handed out in can be checked.
        wait_until_waiting(local_stack, tasks[-1]["id"], "slots-project")
    finished = [
        wait_for_task(local_stack, task["id"], project="slots-project", timeout=180)[0] for task in tasks
    ]
    stop.set()
    sampler.join()

    assert [task["status"] for task in finished] == ["success"] * 5
    intervals = [processing_interval(history(local_stack, task["id"])) for task in tasks]
    moments = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    overlap = peak = 0
    for _, change in moments:
        overlap += change
        peak = max(peak, overlap)
    assert peak <= MAX_CONCURRENT
    assert max(running_seen) <= MAX_CONCURRENT
    # Read after every task is final (the sampler's last read may predate the last success).
    final = dynamodb.get_item(TableName=slots_table, Key={"id": {"S": "task-slots"}})["Item"]
    assert final["running"]["N"] == "0"
    # Strictly in creation order: a freed slot goes to the oldest parked task. (The tolerance is the
    # interpreter's threads waking up: two executions resumed by one dispatch, a moment apart.)
    starts = [start for start, _ in intervals]
    for older, start in enumerate(starts):
        for younger in range(older + 1, len(starts)):
            assert starts[younger] >= start - 0.05, f"task {younger} took a slot before task {older}"
    # Parked, not polling: each execution entered TakeSlot once (the history stays short).
    for task in tasks:
        entered = [
            event
            for event in history(local_stack, task["id"])
            if event["type"] == "TaskStateEntered"
            and (event.get("stateEnteredEventDetails") or {}).get("name") == "TakeSlot"
        ]
        assert len(entered) == 1


def test_an_aborted_execution_ends_its_task_in_failure_and_frees_its_slot(
    local_stack: Any, image_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stack is shared by the session's tests: another test's import may reach the step too, so
    # each task's start is told apart, and the stop waits for this task's own step.
    entered: dict[str, threading.Event] = {}
    release = threading.Event()
    original = ImportTask.fetch

    def slow_fetch(self: ImportTask, task_id: str) -> dict[str, Any]:
        entered.setdefault(task_id, threading.Event()).set()
        release.wait(30)
        return original(self, task_id)

    monkeypatch.setattr(ImportTask, "fetch", slow_fetch)
    image = make_raw(image_server.root)
    task = create_task(local_stack, import_body(image_server.url(image.name), "raw"), project="abort-project")
    started = entered.setdefault(task["id"], threading.Event())
    assert started.wait(60), "the import step never started (its slot still held by another test's task?)"
    arn = (
        local_stack.state_machines["TaskWorkflow"].replace(":stateMachine:", ":execution:") + f":{task['id']}"
    )

    local_stack.client("stepfunctions").stop_execution(
        executionArn=arn, error="Operator", cause="stopped by a test"
    )
    release.set()  # moto's interpreter acts on the stop once the running step returns
    finished, _ = wait_for_task(local_stack, task["id"], project="abort-project")

    assert finished["status"] == "failure", finished
    assert finished["message"] == "The task's workflow was stopped before the task finished.", finished
    # The step, let go after the stop, may still stage its data after the task ended; it then finds
    # the task no longer processing and removes what it staged (as a Lambda step outliving its
    # execution does on AWS), so the staging prefix empties soon after, not necessarily at once.
    deadline = time.monotonic() + 30
    while True:
        staged = local_stack.client("s3").list_objects_v2(
            Bucket=local_stack.buckets["StagingBucket"], Prefix=f"{task['id']}/"
        )
        if staged.get("KeyCount", 0) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert staged.get("KeyCount", 0) == 0, "what the stopped step staged should have been removed"
    # Its slot is given back: none of the stack's tasks is still processing and holding one (the
    # stack is shared by the session's tests, whose tasks may still be ending).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        item = local_stack.client("dynamodb").get_item(
            TableName=local_stack.tables["TaskSlotsTable"], Key={"id": {"S": "task-slots"}}
        )["Item"]
        if item["running"]["N"] == "0":
            break
        time.sleep(0.1)
    assert item["running"]["N"] == "0", item


def test_a_step_that_crashes_ends_the_task_in_failure_with_a_message(
    local_stack: Any, image_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: ImportTask, task_id: str) -> dict[str, Any]:
        raise RuntimeError("an internal detail that must not reach the user")

    monkeypatch.setattr(ImportTask, "fetch", crash)
    image = make_raw(image_server.root)

    task = create_task(local_stack, import_body(image_server.url(image.name), "raw"), project="crash-project")
    finished, _ = wait_for_task(local_stack, task["id"], project="crash-project")

    assert finished["status"] == "failure"
    assert (
        finished["message"]
        == "The task stopped because of an internal error in its processing step; please try again later."
    )
    assert "internal detail" not in json.dumps(finished)


def test_a_throttled_step_is_retried_and_the_task_succeeds(
    local_stack: Any, image_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = ImportTask.fetch

    def throttled_once(self: ImportTask, task_id: str) -> dict[str, Any]:
        calls.append(task_id)
        if len(calls) == 1:
            raise TransientStorageError("The image store is busy (SlowDown)")
        return original(self, task_id)

    monkeypatch.setattr(ImportTask, "fetch", throttled_once)
    image = make_raw(image_server.root)

    task = create_task(local_stack, import_body(image_server.url(image.name), "raw"), project="retry-project")
    finished, _ = wait_for_task(local_stack, task["id"], project="retry-project")

    assert finished["status"] == "success", finished["message"]
    assert len(calls) == 2
    image_id = finished["result"]["image_id"]
    shown = requests.get(
        f"{local_stack.api_url}/v2/images/{image_id}",
        headers=local_stack.headers("retry-project"),
        timeout=30,
    )
    assert shown.status_code == 200


def test_a_step_that_runs_past_its_timeout_ends_the_task_in_failure(
    local_stack: Any, image_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stack's StepTimeoutSeconds is 40 (tests/e2e/conftest.py); this step runs until the test ends.
    test_over = threading.Event()

    def too_slow(self: ImportTask, task_id: str) -> dict[str, Any]:
        test_over.wait(120)
        raise RuntimeError("finished too late to matter")

    monkeypatch.setattr(ImportTask, "fetch", too_slow)
    image = make_raw(image_server.root)

    task = create_task(
        local_stack, import_body(image_server.url(image.name), "raw"), project="timeout-project"
    )
    try:
        finished, _ = wait_for_task(local_stack, task["id"], project="timeout-project", timeout=120)
    finally:
        test_over.set()

    assert finished["status"] == "failure"
    assert "took longer than allowed" in finished["message"]


def test_a_step_that_finishes_after_its_task_ended_leaves_no_image_behind(
    local_stack: Any, image_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an import whose register step has stored the image's data and is about to create its
    # record when its task ends (here a cancel, so that no timing decides which comes first; the
    # step timeout's own path is the test above), and the step then goes on
    project = "ghost-project"
    headers = local_stack.headers(project)
    original = ImagesTable.create
    outcome: list[BaseException | bool] = []
    finished_step = threading.Event()

    def create_after_the_failure(self: ImagesTable, image: Image, guard: Guard | None = None) -> bool:
        try:
            url = f"{local_stack.api_url}/v2/tasks/{image.task_ids[0]}"
            requests.post(f"{url}/actions/cancel", headers=headers, timeout=30).raise_for_status()
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                if requests.get(url, headers=headers, timeout=30).json()["status"] == "failure":
                    break
                time.sleep(0.2)
            created = original(self, image, guard)
            outcome.append(created)
            return created
        except BaseException as error:
            outcome.append(error)
            raise
        finally:
            finished_step.set()

    monkeypatch.setattr(ImagesTable, "create", create_after_the_failure)
    image = make_raw(image_server.root)

    # When the task ends and the late step then finishes
    task = create_task(local_stack, import_body(image_server.url(image.name), "raw"), project=project)
    failed, _ = wait_for_task(local_stack, task["id"], project=project, timeout=60)
    assert finished_step.wait(60), "the late register step never finished"

    # Then the step's write was refused, and there is no image: no record, no bits, nothing staged
    assert failed["status"] == "failure" and failed["error_code"] == "cancelled", failed
    assert len(outcome) == 1 and isinstance(outcome[0], TaskNotProcessing), outcome
    image_id = created_image_id(task["id"], local_stack.tables["TasksTable"], local_stack.client("dynamodb"))
    shown = requests.get(f"{local_stack.api_url}/v2/images/{image_id}", headers=headers, timeout=30)
    assert shown.status_code == 404
    listed = requests.get(f"{local_stack.api_url}/v2/images", headers=headers, timeout=30).json()
    assert image_id not in {image["id"] for image in listed["images"]}  # (others' public ones show)
    s3 = local_stack.client("s3")
    images = s3.list_objects_v2(Bucket=local_stack.buckets["ImagesBucket"], Prefix=f"images/{image_id}")
    staged = s3.list_objects_v2(Bucket=local_stack.buckets["StagingBucket"], Prefix=f"{task['id']}/")
    assert images["KeyCount"] == 0 and staged["KeyCount"] == 0
    after = requests.get(f"{local_stack.api_url}/v2/tasks/{task['id']}", headers=headers, timeout=30).json()
    assert after["status"] == "failure" and after["result"] is None
