"""`make invoke` (local/invoke.py): every file in events/ runs through the tool's code path.

In-process on the session stack (`invoke_event`, what `main` calls after starting its own stack), and
twice through the command itself in a subprocess (its own stack: stdout holds the payload only,
the exit status says whether the function errored).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from local.invoke import (
    PLACEHOLDER_OBJECT,
    PLACEHOLDER_TOKEN,
    InvokeError,
    function_for_event,
    invoke_event,
    read_event,
)
from tests.e2e.helpers import wait_for_task
from tests.support import EVENTS, ROOT

pytestmark = pytest.mark.e2e

EVENT_FILES = sorted(EVENTS.glob("*.json"))


def _allowed_for_the_project(result: dict[str, Any]) -> None:
    statements = result["policyDocument"]["Statement"]
    assert [statement["Effect"] for statement in statements] == ["Allow"]
    assert result["context"]["project_id"] == "demo-project"


def _status(expected: int) -> Callable[[dict[str, Any]], None]:
    def check(result: dict[str, Any]) -> None:
        assert result["statusCode"] == expected, result
        if expected >= 400:
            assert json.loads(result["body"])["error"]["code"] == expected

    return check


def _one_import_task_created(result: dict[str, Any]) -> None:
    [outcome] = result["outcomes"]
    assert outcome["outcome"] == "created", outcome
    assert outcome["key"] == "uploads/project-a/cirros 0.6.2.qcow2"


#: event file → the function it is for, and what its payload must say. A new file in events/ fails
#: `test_every_event_file_runs` until it is added here.
EXPECTED: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "authorizer_request.json": ("AuthorizerFunction", _allowed_for_the_project),
    "s3_object_created.json": ("UploadTriggerFunction", _one_import_task_created),
    # The event's source host is *.invalid: the create-time DNS check refuses it, as it should.
    "tasks_api_create_import.json": ("TasksApiFunction", _status(400)),
    "tasks_api_list.json": ("TasksApiFunction", _status(200)),
    # No such task in a fresh stack.
    "tasks_api_show.json": ("TasksApiFunction", _status(404)),
}


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.name)
def test_the_event_says_which_function_it_is_for(local_stack, path: Path):
    assert path.name in EXPECTED, f"{path.name}: add what `make invoke` should answer to EXPECTED"

    assert function_for_event(local_stack.stack.template, read_event(path)) == EXPECTED[path.name][0]


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.name)
def test_every_event_file_runs(local_stack, path: Path):
    assert path.name in EXPECTED, f"{path.name}: add what `make invoke` should answer to EXPECTED"
    logical_id, check = EXPECTED[path.name]

    invoked, invocation = invoke_event(local_stack.stack, logical_id, read_event(path))

    assert invoked == logical_id
    assert not invocation.errored, invocation.payload
    check(invocation.result())


def test_the_s3_event_gets_a_local_bucket_an_object_and_one_task(local_stack):
    uploads = local_stack.buckets["UploadsBucket"]
    event = read_event(EVENTS / "s3_object_created.json")
    assert event["Records"][0]["s3"]["bucket"]["name"] != uploads  # the deployed stack's name

    _, invocation = invoke_event(local_stack.stack, None, event)

    [outcome] = invocation.result()["outcomes"]
    s3 = local_stack.client("s3")
    placed = s3.get_object(Bucket=uploads, Key="uploads/project-a/cirros 0.6.2.qcow2")["Body"].read()
    assert placed == PLACEHOLDER_OBJECT
    task, _ = wait_for_task(local_stack, outcome["task_id"], project="project-a")
    assert task["type"] == "import"
    local_stack.stack.hook.wait_for_notifications()
    # The object was put without a notification: the event file is the only trigger.
    listed = requests.get(
        f"{local_stack.api_url}/v2/tasks", headers=local_stack.headers("project-a"), timeout=30
    ).json()["tasks"]
    assert [listed_task["id"] for listed_task in listed] == [outcome["task_id"]]


def test_an_authorizer_event_with_a_real_value_keeps_it(local_stack):
    event = read_event(EVENTS / "authorizer_request.json")
    event["headers"]["X-Auth-Token"] = "not-a-token"
    assert PLACEHOLDER_TOKEN not in json.dumps(event["headers"])

    _, invocation = invoke_event(local_stack.stack, "AuthorizerFunction", event)

    assert invocation.errored
    assert invocation.result()["errorMessage"] == "Unauthorized"  # API Gateway's 401


def test_a_function_no_bucket_notifies_cannot_take_a_foreign_bucket(local_stack):
    event = read_event(EVENTS / "s3_object_created.json")

    with pytest.raises(InvokeError, match="not a bucket of the local stack"):
        invoke_event(local_stack.stack, "TaskStatusFunction", event)


def test_an_unknown_function_is_named_with_the_known_ones(local_stack):
    with pytest.raises(InvokeError, match="TasksApiFunction"):
        invoke_event(local_stack.stack, "NoSuchFunction", read_event(EVENTS / "tasks_api_list.json"))


# ---------------------------------------------------------------- the command


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'common' / 'python'}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "local.invoke", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_command_prints_only_the_payload_and_the_logs_on_stderr():
    completed = _run(str(EVENTS / "s3_object_created.json"))

    assert completed.returncode == 0, completed.stderr
    _one_import_task_created(json.loads(completed.stdout))
    assert "Import task created" in completed.stderr  # the function's own log line


def test_the_command_exits_non_zero_when_the_function_errors(tmp_path):
    event = read_event(EVENTS / "authorizer_request.json")
    event["headers"]["X-Auth-Token"] = "not-a-token"
    (tmp_path / "bad_token.json").write_text(json.dumps(event))

    completed = _run("AuthorizerFunction", str(tmp_path / "bad_token.json"))

    assert completed.returncode == 1
    assert json.loads(completed.stdout)["errorMessage"] == "Unauthorized"


def test_the_command_says_what_is_wrong_with_an_event_it_cannot_place(tmp_path):
    (tmp_path / "mystery.json").write_text('{"hello": "world"}')

    completed = _run(str(tmp_path / "mystery.json"))

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "name the function" in completed.stderr
