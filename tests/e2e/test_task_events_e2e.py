"""A task's end on the local stack's bus: one event per task, with the task's public fields."""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import make_raw

PUBLIC = {"id", "type", "status", "owner", "result", "message", "created_at", "updated_at", "expires_at"}


def events_of(stack: Any, task_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The imagetasks events about `task_id`, once there is at least one (the announcement follows
    the status write within the same invocation)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in stack.stack.published_events("imagetasks") if e["detail"]["id"] == task_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def execution_ended(stack: Any, task_id: str, timeout: float = 60) -> dict[str, Any]:
    arn = stack.state_machines["TaskWorkflow"].replace(":stateMachine:", ":execution:") + f":{task_id}"
    sfn = stack.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = sfn.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.1)
    raise AssertionError(f"the execution of {task_id} did not end")


def invoke(stack: Any, function: str, event: dict[str, Any]) -> Any:
    spec = stack.stack.template.functions[function]
    return stack.stack.runner.invoke(spec, event).result()


def test_an_import_that_succeeds_is_announced_once(local_stack: Any, image_server: Any) -> None:
    # Given an import of a good image
    image = make_raw(image_server.root)
    task = create_task(local_stack, import_body(image_server.url(image.name), "raw"))

    # When it succeeds, and the workflow's RecordSuccess is delivered again
    finished, _ = wait_for_task(local_stack, task["id"])
    assert finished["status"] == "success"
    events_of(local_stack, task["id"])
    execution_ended(local_stack, task["id"])
    invoke(
        local_stack,
        "TaskStatusFunction",
        {"action": "succeed", "task_id": task["id"], "result": finished["result"]},
    )

    # Then exactly one Task Succeeded event, saying what GET /v2/tasks/{id} says
    events = [e for e in local_stack.stack.published_events("imagetasks") if e["detail"]["id"] == task["id"]]
    assert [(e["source"], e["detail-type"]) for e in events] == [("imagetasks", "Task Succeeded")]
    detail = events[0]["detail"]
    shown = requests.get(
        f"{local_stack.api_url}/v2/tasks/{task['id']}", headers=local_stack.headers(), timeout=30
    ).json()
    assert detail.keys() >= PUBLIC
    assert {k: v for k, v in shown.items() if k in detail} == detail
    assert detail["result"]["image_id"] == shown["result"]["image_id"]
    assert "input" not in detail and "version" not in detail
    # and the announced end leaves the outbox (the sparse index the reconciler sweeps) right after
    deadline = time.monotonic() + 10
    while True:
        item = local_stack.client("dynamodb").get_item(
            TableName=local_stack.tables["TasksTable"], Key={"id": {"S": task["id"]}}, ConsistentRead=True
        )["Item"]
        if "event_pending" not in item or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "event_pending" not in item


def test_an_import_that_fails_is_announced_once(local_stack: Any, image_server: Any) -> None:
    # Given an import from a source that answers 404
    task = create_task(local_stack, import_body(image_server.url("no-such-image.raw"), "raw"))

    # When it fails, its execution ends FAILED and the reconciler hears of it (as EventBridge tells it)
    finished, _ = wait_for_task(local_stack, task["id"])
    assert finished["status"] == "failure"
    events_of(local_stack, task["id"])
    execution = execution_ended(local_stack, task["id"])
    invoke(
        local_stack,
        "ReconcileFunction",
        {
            "version": "0",
            "id": "e2e-replay",
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": "123456789012",
            "time": "2026-01-01T00:00:00Z",
            "region": "us-east-1",
            "resources": [execution["executionArn"]],
            "detail": {
                "executionArn": execution["executionArn"],
                "stateMachineArn": execution["stateMachineArn"],
                "name": task["id"],
                "status": "ABORTED",
            },
        },
    )

    # Then exactly one Task Failed event, with the failure's code and message
    events = [e for e in local_stack.stack.published_events("imagetasks") if e["detail"]["id"] == task["id"]]
    assert [e["detail-type"] for e in events] == ["Task Failed"]
    detail = events[0]["detail"]
    assert detail["status"] == "failure" and detail["error_code"] == finished["error_code"]
    assert detail["message"] == finished["message"] and "404" in detail["message"]
    assert detail["owner"] == "demo-project" and detail["type"] == "import"
