"""`make invoke` (local/invoke.py): every file in events/ runs through the tool's code path and
does what docs/local.md says it shows.

In-process on the session stack (`invoke_event`, what `main` calls after starting its own stack,
with the sample image served by the tests' image server instead of the command's own), and through
the command itself in a subprocess (its own fresh stack: stdout holds the payload only, the exit
status says whether the function errored). Every event runs as project-a (the API events' project),
which no other end-to-end test uses; what an event leaves unfinished is ended before the next one
(`_settle`), so the placeholders' tasks never hold the stack's two processing slots.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from local.invoke import (
    PLACEHOLDER_OBJECT,
    PLACEHOLDER_TOKEN,
    SAMPLE_IMAGE,
    SAMPLE_NAME,
    InvokeError,
    function_for_event,
    invoke_event,
    read_event,
)
from tests.e2e.conftest import DevStackHandle, ImageServer
from tests.e2e.helpers import wait_for_task
from tests.support import EVENTS, run_module

pytestmark = pytest.mark.e2e

EVENT_FILES = sorted(EVENTS.glob("*.json"))
PROJECT = "project-a"  # the API events' own (requestContext.authorizer); the others' here too
Check = Callable[[Any], None]


def _allowed_for_the_project(result: dict[str, Any]) -> None:
    statements = result["policyDocument"]["Statement"]
    assert [statement["Effect"] for statement in statements] == ["Allow"]
    assert result["context"]["project_id"] == PROJECT


def _status(expected: int, **fields: Any) -> Check:
    """An API answer with this status; for a JSON body, these fields with these values."""

    def check(result: dict[str, Any]) -> None:
        assert result["statusCode"] == expected, result
        body = json.loads(result["body"]) if result.get("body") else None
        if expected >= 400:
            assert body["error"]["code"] == expected
        for name, value in fields.items():
            assert body is not None and body[name] == value, (name, body)

    return check


def _has(*keys: str, **fields: Any) -> Check:
    """A JSON body (API answer) or payload (any other function) with these keys and values."""

    def check(result: dict[str, Any]) -> None:
        body = json.loads(result["body"]) if "statusCode" in result else result
        if "statusCode" in result:
            assert result["statusCode"] in (200, 201), result
        assert set(keys) <= set(body), body
        for name, value in fields.items():
            assert body[name] == value, (name, body)

    return check


def _one_import_task_created(result: dict[str, Any]) -> None:
    [outcome] = result["outcomes"]
    assert outcome["outcome"] == "created", outcome
    assert outcome["key"] == f"uploads/{PROJECT}/sample disk.raw"


def _redirect_to_the_data(result: dict[str, Any]) -> None:
    assert result["statusCode"] == 302, result
    [location] = result["multiValueHeaders"]["Location"]
    assert location.startswith("http://") and "X-Amz-Signature=" in location


def _refused_for_the_dns_name(result: dict[str, Any]) -> None:
    _status(400)(result)
    assert "images.example.invalid does not exist" in json.loads(result["body"])["error"]["message"]


def _cancelled(result: dict[str, Any]) -> None:
    _status(202, status="failure")(result)
    assert json.loads(result["body"])["error_code"] == "cancelled"


def _console_page(result: dict[str, Any]) -> None:
    assert result["statusCode"] == 200, result
    headers = {name.lower(): values[-1] for name, values in result["multiValueHeaders"].items()}
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'sha256-" in headers["content-security-policy"]
    assert "<title>imagetasks console</title>" in result["body"]


def _not_offered(result: dict[str, Any]) -> None:
    _status(404)(result)
    assert "is not offered" in json.loads(result["body"])["error"]["message"]


def _points_to_the_upload_path(result: dict[str, Any]) -> None:
    _status(405)(result)
    assert "s3://imagetasks-uploads-local/uploads/" in json.loads(result["body"])["error"]["message"]


#: event file → the function it is for, and what its payload must say. A new file in events/ fails
#: `test_every_event_file_runs` until it is added here. Tasks an event starts (the API's creates,
#: the upload, the web-download import) must end in success as well (`test_every_event_file_runs`).
EXPECTED: dict[str, tuple[str, Check]] = {
    "authorizer_request.json": ("AuthorizerFunction", _allowed_for_the_project),
    "s3_object_created.json": ("UploadTriggerFunction", _one_import_task_created),
    "tasks_api_root.json": ("TasksApiFunction", _has("versions")),
    "tasks_api_versions.json": ("TasksApiFunction", _has("versions")),
    "tasks_api_v2.json": ("TasksApiFunction", _has("versions")),
    "tasks_api_v2_slash.json": ("TasksApiFunction", _has("versions")),
    "tasks_api_openapi.json": ("TasksApiFunction", _has("openapi", "paths")),
    "tasks_api_console.json": ("TasksApiFunction", _console_page),
    "tasks_api_create_import.json": ("TasksApiFunction", _status(201, type="import", status="pending")),
    # The point of this one is the refusal: a source host that does not exist.
    "tasks_api_create_import_refused.json": ("TasksApiFunction", _refused_for_the_dns_name),
    "tasks_api_create_convert.json": ("TasksApiFunction", _status(201, type="convert", status="pending")),
    "tasks_api_create_export.json": ("TasksApiFunction", _status(201, type="export", status="pending")),
    "tasks_api_list.json": ("TasksApiFunction", _has("tasks", "first")),
    "tasks_api_show.json": ("TasksApiFunction", _status(200, type="import", status="processing")),
    # Nothing changes the task: the poll answers after its 2 s with the task as it is.
    "tasks_api_show_long_poll.json": ("TasksApiFunction", _status(200, type="import", status="processing")),
    "tasks_api_cancel.json": ("TasksApiFunction", _cancelled),
    "tasks_api_schema_task.json": ("TasksApiFunction", _has("properties", name="task")),
    "tasks_api_schema_tasks.json": ("TasksApiFunction", _has("properties", name="tasks")),
    "images_api_create.json": (
        "ImagesApiFunction",
        _status(201, status="queued", name="web-download-example"),
    ),
    "images_api_list.json": ("ImagesApiFunction", _has("images", "first")),
    "images_api_show.json": ("ImagesApiFunction", _status(200, status="active", size=len(SAMPLE_IMAGE))),
    "images_api_patch.json": ("ImagesApiFunction", _status(200, name="renamed", os_distro="cirros")),
    "images_api_delete.json": ("ImagesApiFunction", _status(204)),
    "images_api_download.json": ("ImagesApiFunction", _redirect_to_the_data),
    "images_api_stage.json": ("ImagesApiFunction", _points_to_the_upload_path),
    "images_api_import.json": ("ImagesApiFunction", _status(202)),
    "images_api_tag_add.json": ("ImagesApiFunction", _status(204)),
    "images_api_image_tasks.json": ("ImagesApiFunction", _has("tasks")),
    "images_api_info_import.json": ("ImagesApiFunction", _has("import-methods")),
    "images_api_info_stores.json": ("ImagesApiFunction", _has("stores")),
    "images_api_schema_image.json": ("ImagesApiFunction", _has("properties", name="image")),
    "images_api_schema_images.json": ("ImagesApiFunction", _has("properties", name="images")),
    "images_api_members_add.json": (
        "ImagesApiFunction",
        _status(200, member_id="project-c", status="pending"),
    ),
    "images_api_member_show.json": (
        "ImagesApiFunction",
        _status(200, member_id="project-b", status="pending"),
    ),
    "images_api_schema_member.json": ("ImagesApiFunction", _has("properties", name="member")),
    "images_api_schema_members.json": ("ImagesApiFunction", _has("properties", name="members")),
    # Not offered: each of these paths answers a 404 saying so.
    "images_api_metadefs.json": ("ImagesApiFunction", _not_offered),
    "images_api_metadefs_namespaces.json": ("ImagesApiFunction", _not_offered),
    "images_api_schema_metadefs.json": ("ImagesApiFunction", _not_offered),
    "task_status_take_slot.json": ("TaskStatusFunction", _has(started=True, final=False)),
    "task_status_record_success.json": ("TaskStatusFunction", _has(status="success")),
    "task_status_record_failure.json": ("TaskStatusFunction", _has(status="failure")),
    "task_status_clean_up.json": ("TaskStatusFunction", _has(cleaned=True)),
    "import_task_fetch.json": (
        "ImportTaskFunction",
        _has("staged_key", size=len(SAMPLE_IMAGE), detected_format="raw"),
    ),
    "import_task_register.json": ("ImportTaskFunction", _has("image_id")),
    "convert_task_convert.json": ("ConvertTaskFunction", _has("image_id")),
    "export_task_export.json": (
        "ExportTaskFunction",
        _has("url", "key", size=len(SAMPLE_IMAGE), disk_format="raw"),
    ),
    "reconcile_execution_aborted.json": ("ReconcileFunction", _has(reconciled=True)),
    "reconcile_slot_sweep.json": ("ReconcileFunction", _has("resumed", "started", "announced")),
}


@pytest.fixture(scope="module")
def sample_url(image_server: ImageServer) -> str:
    """The sample image `make invoke` serves, served here by the stack's allowed image server."""
    (image_server.root / SAMPLE_NAME).write_bytes(SAMPLE_IMAGE)
    return image_server.url(SAMPLE_NAME)


def _unfinished(local_stack: DevStackHandle) -> list[dict[str, Any]]:
    found = []
    for status in ("pending", "processing"):
        response = requests.get(
            f"{local_stack.api_url}/v2/tasks",
            params={"status": status, "limit": "100"},
            headers=local_stack.headers(PROJECT),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        found += response.json()["tasks"]
    return found


def _settle(local_stack: DevStackHandle) -> list[dict[str, Any]]:
    """End what an event left unfinished: a task made for its placeholders (no execution behind it)
    is failed as the workflow's RecordFailure would; a task with an execution (the API's creates,
    the upload) runs to its end. Returns the latter, final."""
    stepfunctions = local_stack.client("stepfunctions")
    executions = local_stack.state_machines["TaskWorkflow"].replace(":stateMachine:", ":execution:")
    record_failure = local_stack.stack.runner.spec("TaskStatusFunction")
    assert record_failure is not None
    ran = []
    for task in _unfinished(local_stack):
        try:
            stepfunctions.describe_execution(executionArn=f"{executions}:{task['id']}")
        except stepfunctions.exceptions.ExecutionDoesNotExist:
            error = {"Error": "States.Timeout", "Cause": "ended by the test"}
            payload = {"action": "fail", "task_id": task["id"], "error": error}
            assert not local_stack.stack.runner.invoke(record_failure, payload).errored
            continue
        ran.append(wait_for_task(local_stack, task["id"], project=PROJECT)[0])
    return ran


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.name)
def test_the_event_says_which_function_it_is_for(local_stack, path: Path):
    assert path.name in EXPECTED, f"{path.name}: add what `make invoke` should answer to EXPECTED"

    assert function_for_event(local_stack.stack.template, read_event(path)) == EXPECTED[path.name][0]


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.name)
def test_every_event_file_runs(local_stack, sample_url: str, path: Path):
    assert path.name in EXPECTED, f"{path.name}: add what `make invoke` should answer to EXPECTED"
    logical_id, check = EXPECTED[path.name]
    _settle(local_stack)  # nothing an earlier test left holds a processing slot

    invoked, invocation = invoke_event(local_stack.stack, None, read_event(path), PROJECT, sample_url)

    assert invoked == logical_id
    assert not invocation.errored, invocation.payload
    check(invocation.result())
    for task in _settle(local_stack):
        assert task["status"] == "success", task  # what the event started worked too


def test_a_placeholder_the_tool_does_not_know_is_named(local_stack):
    event = read_event(EVENTS / "task_status_clean_up.json")
    event["task_id"] = "replace-with-a-mystery"

    with pytest.raises(InvokeError, match="replace-with-a-mystery"):
        invoke_event(local_stack.stack, None, event, PROJECT)


def test_the_s3_event_gets_a_local_bucket_an_object_and_one_task(local_stack):
    uploads = local_stack.buckets["UploadsBucket"]
    event = read_event(EVENTS / "s3_object_created.json")
    assert event["Records"][0]["s3"]["bucket"]["name"] == uploads  # the local stack's name
    # A deployed stack's name is made the local one; a key of this test's own.
    event["Records"][0]["s3"]["bucket"]["name"] = "imagetasks-uploads-0123456789ab"
    event["Records"][0]["s3"]["object"]["key"] = "uploads/project-b/only+once.raw"

    _, invocation = invoke_event(local_stack.stack, None, event)

    [outcome] = invocation.result()["outcomes"]
    task, _ = wait_for_task(local_stack, outcome["task_id"], project="project-b")
    assert (task["type"], task["status"]) == ("import", "success")  # the placeholder is an image
    # The object placed under the event's (decoded) key is what was imported: the placeholder.
    # (The import deletes the upload it made an image of, so the image is where to look.)
    image = requests.get(
        f"{local_stack.api_url}/v2/images/{task['result']['image_id']}",
        headers=local_stack.headers("project-b"),
        timeout=30,
    ).json()
    assert task["input"]["import_from"] == f"s3://{uploads}/uploads/project-b/only once.raw"
    assert (image["size"], image["checksum"]) == (
        len(PLACEHOLDER_OBJECT),
        hashlib.md5(PLACEHOLDER_OBJECT).hexdigest(),
    )
    local_stack.stack.hook.wait_for_notifications()
    # The object was put without a notification: the event file is the only trigger.
    listed = requests.get(
        f"{local_stack.api_url}/v2/tasks", headers=local_stack.headers("project-b"), timeout=30
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
    event["Records"][0]["s3"]["bucket"]["name"] = "imagetasks-uploads-0123456789ab"  # a deployed one

    with pytest.raises(InvokeError, match="not a bucket of the local stack"):
        invoke_event(local_stack.stack, "TaskStatusFunction", event)


def test_an_unknown_function_is_named_with_the_known_ones(local_stack):
    with pytest.raises(InvokeError, match="TasksApiFunction"):
        invoke_event(local_stack.stack, "NoSuchFunction", read_event(EVENTS / "tasks_api_list.json"))


# ---------------------------------------------------------------- the command


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("local.invoke", *args)


def test_the_command_prints_only_the_payload_and_the_logs_on_stderr():
    completed = _run(str(EVENTS / "s3_object_created.json"))

    assert completed.returncode == 0, completed.stderr
    _one_import_task_created(json.loads(completed.stdout))
    assert "Import task created" in completed.stderr  # the function's own log line


def test_the_command_serves_the_sample_image_an_import_event_names():
    completed = _run(str(EVENTS / "tasks_api_create_import.json"))

    assert completed.returncode == 0, completed.stderr
    EXPECTED["tasks_api_create_import.json"][1](json.loads(completed.stdout))
    source = json.loads(json.loads(completed.stdout)["body"])["input"]["import_from"]
    assert source.startswith("http://127.0.0.1:") and source.endswith(f"/{SAMPLE_NAME}")


def test_the_command_makes_what_a_workflow_step_needs_on_its_fresh_stack():
    completed = _run(str(EVENTS / "convert_task_convert.json"))

    assert completed.returncode == 0, completed.stderr
    EXPECTED["convert_task_convert.json"][1](json.loads(completed.stdout))


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
