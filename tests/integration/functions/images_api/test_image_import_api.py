"""Glance's interoperable import on moto: discovery, a queued image, web-download as an import task
that fills that image (or puts it back to queued when it fails)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagetasks import composition
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.config import Settings
from imagetasks.domain.failures import TaskFailure
from imagetasks.entrypoints.steps import processing_step
from tests.image_corpus import make_qcow2, make_qcow2_backing_file, require_qemu_img
from tests.support import (
    CREATE_IMAGE,
    IMPORT_INPUT,
    FakeLambdaContext,
    api_event,
    call,
    create_image,
    fail_task,
    load_handler,
    show,
    start_processing,
    tasks_api_handler,
)

PROJECT = "project-a"


def upload(aws: dict[str, str], data: bytes, name: str = "disk.qcow2") -> str:
    key = f"uploads/{PROJECT}/{name}"
    boto3.client("s3").put_object(Bucket=aws["UPLOADS_BUCKET"], Key=key, Body=data)
    return f"s3://{aws['UPLOADS_BUCKET']}/{key}"


def start_import(images: Any, image_id: str, uri: str, name: str = "web-download") -> dict[str, Any]:
    body = {"method": {"name": name, "uri": uri}}
    return call(images, api_event("POST", f"/v2/images/{image_id}/import", body=body))


def image_tasks(images: Any, image_id: str) -> list[dict[str, Any]]:
    response = call(images, api_event("GET", f"/v2/images/{image_id}/tasks"))
    tasks: list[dict[str, Any]] = response["json"]["tasks"]
    return tasks


# ------------------------------------------------------------------ discovery
def test_info_import_and_stores_have_glances_shapes(images: Any) -> None:
    methods = call(images, api_event("GET", "/v2/info/import"))
    stores = call(images, api_event("GET", "/v2/info/stores"))

    assert methods["statusCode"] == 200 and methods["json"] == {
        "import-methods": {
            "description": "Import methods available.",
            "type": "array",
            "value": ["web-download"],
        }
    }
    assert stores["statusCode"] == 200
    assert [(s["id"], s["default"]) for s in stores["json"]["stores"]] == [("default", "true")]


# ------------------------------------------------------------------ create, show, delete
def test_create_makes_a_queued_image_of_the_callers_project_shown_as_get_shows_it(images: Any) -> None:
    created = create_image(images)

    assert created["status"] == "queued" and created["owner"] == PROJECT
    assert created["size"] is None and created["checksum"] is None and created["os_hash_algo"] is None
    assert (created["name"], created["tags"], created["min_disk"], created["min_ram"]) == (
        "cirros",
        ["a", "b"],
        1,
        64,
    )
    assert created["os_distro"] == "cirros"
    assert show(images, created["id"]) == created
    listed = call(images, api_event("GET", "/v2/images", query={"status": "queued"}))["json"]["images"]
    assert [image["id"] for image in listed] == [created["id"]]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({**CREATE_IMAGE, "disk_format": "floppy"}, 400, "Invalid value 'floppy' for disk_format"),
        ({"name": "x", "container_format": "bare"}, 400, "Image disk_format is required"),
        ({**CREATE_IMAGE, "min_ram": "64"}, 400, "Invalid value for min_ram"),
        ({**CREATE_IMAGE, "protected": "yes"}, 400, "Invalid value for protected"),
        ({**CREATE_IMAGE, "visibility": "everyone"}, 400, "Invalid value 'everyone' for visibility"),
        ({**CREATE_IMAGE, "os_distro": 7}, 400, "must be a string"),
        ({**CREATE_IMAGE, "status": "active"}, 403, "Attribute 'status' is read-only."),
        (
            {**CREATE_IMAGE, "os_glance_import_task": "x"},
            403,
            "Attribute 'os_glance_import_task' is reserved.",
        ),
        (
            {**CREATE_IMAGE, "owner": "project-b"},
            403,
            "You are not permitted to create images owned by 'project-b'.",
        ),
    ],
)
def test_create_refuses_what_glance_refuses(
    images: Any, aws: dict[str, str], body: dict[str, Any], status: int, message: str
) -> None:
    response = call(images, api_event("POST", "/v2/images", body=body))

    assert response["statusCode"] == status and message in response["json"]["error"]["message"]
    assert boto3.client("dynamodb").scan(TableName=aws["IMAGES_TABLE"], Select="COUNT")["Count"] == 0


def test_a_chosen_id_that_exists_is_409(images: Any) -> None:
    first = create_image(images, {**CREATE_IMAGE, "id": "0b5c1e7e-9c1a-4d8e-8f0e-2a6f1d3c4b5a"})

    again = call(images, api_event("POST", "/v2/images", body={**CREATE_IMAGE, "id": first["id"]}))

    assert again["statusCode"] == 409
    assert again["json"]["error"]["message"] == f"Image with identifier {first['id']} already exists!"


def test_a_queued_image_is_deleted_and_has_no_data_to_download(images: Any) -> None:
    created = create_image(images)

    download = call(images, api_event("GET", f"/v2/images/{created['id']}/file"))
    deleted = call(images, api_event("DELETE", f"/v2/images/{created['id']}"))

    assert download["statusCode"] == 204 and download["body"] == ""
    assert deleted["statusCode"] == 204
    assert call(images, api_event("GET", f"/v2/images/{created['id']}"))["statusCode"] == 404


def test_uploading_data_through_the_api_points_to_the_s3_upload_path(
    images: Any, aws: dict[str, str]
) -> None:
    created = create_image(images)

    response = call(images, api_event("PUT", f"/v2/images/{created['id']}/file", raw_body="data"))

    assert response["statusCode"] == 405
    assert f"s3://{aws['UPLOADS_BUCKET']}/uploads/<project_id>/" in response["json"]["error"]["message"]


# ------------------------------------------------------------------ import
def test_web_download_creates_an_import_task_for_that_image_and_starts_it(
    images: Any, aws: dict[str, str]
) -> None:
    created = create_image(images)
    uri = upload(aws, b"not read yet")

    response = start_import(images, created["id"], uri)

    assert response["statusCode"] == 202, response["body"]
    image = show(images, created["id"])
    assert image["status"] == "importing" and image["os_glance_importing_to_stores"] == "default"
    [task] = image_tasks(images, created["id"])
    assert task["type"] == "import" and task["status"] == "pending" and task["owner"] == PROJECT
    # Glance's image-task view, key for key (glance.db.sqlalchemy.api._task_format with its info)
    assert set(task) == {
        "id", "type", "status", "owner", "expires_at", "created_at", "updated_at", "deleted_at",
        "deleted", "image_id", "request_id", "user_id", "input", "result", "message",
    }  # fmt: skip
    assert task["deleted"] is False and task["deleted_at"] is None
    assert task["input"]["import_from"] == uri and task["input"]["image_id"] == created["id"]
    assert task["input"]["image_properties"]["os_distro"] == "cirros"
    assert task["input"]["import_from_format"] == "qcow2"
    assert image["os_glance_import_task"] == task["id"]
    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=aws["STATE_MACHINE_ARN"])
    assert [e["name"] for e in executions["executions"]] == [task["id"]]
    tasks_api = load_handler("tasks_api")
    tasks_api.tasks_table.cache_clear()
    listed = call(tasks_api, api_event("GET", "/v2/tasks"))["json"]["tasks"]
    assert [t["id"] for t in listed] == [task["id"]]
    again = start_import(images, created["id"], uri)
    assert again["statusCode"] == 409
    assert (
        again["json"]["error"]["message"]
        == "Image needs to be in 'queued' state to use 'web-download' method"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"method": {"name": "glance-direct"}}, "Upload the file to s3://"),
        ({"method": {"name": "copy-image"}}, "Import method copy-image is not available"),
        ({"method": {"name": "web-download"}}, "requires a 'uri'"),
        ({}, "Import request requires a 'method'"),
        (
            {"method": {"name": "web-download", "uri": "file:///etc/passwd"}},
            "File based imports are not allowed",
        ),
        ({"method": {"name": "web-download", "uri": "http://127.0.0.1/disk.qcow2"}}, "127.0.0.1"),
    ],
)
def test_other_methods_and_refused_uris_are_400_and_leave_the_image_queued(
    images: Any, aws: dict[str, str], body: dict[str, Any], message: str
) -> None:
    created = create_image(images)

    response = call(images, api_event("POST", f"/v2/images/{created['id']}/import", body=body))

    assert response["statusCode"] == 400 and message in response["json"]["error"]["message"]
    assert show(images, created["id"])["status"] == "queued"
    assert boto3.client("dynamodb").scan(TableName=aws["TASKS_TABLE"], Select="COUNT")["Count"] == 0


def test_another_projects_image_cannot_be_imported_into(images: Any) -> None:
    created = create_image(
        images, {**CREATE_IMAGE, "visibility": "public"}, project="project-b", roles="member,admin"
    )

    response = start_import(images, created["id"], "https://198.51.100.7/disk.qcow2")

    assert response["statusCode"] == 403


def _the_import_task(images: Any, aws: dict[str, str], image_id: str) -> str:
    [task] = image_tasks(images, image_id)
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    stored = table.get(task["id"])
    assert stored is not None
    start_processing(table, stored)
    return str(task["id"])


def test_the_workflow_steps_make_that_image_active(images: Any, aws: dict[str, str], tmp_path: Path) -> None:
    require_qemu_img()
    data = make_qcow2(tmp_path).read_bytes()
    created = create_image(images)
    assert start_import(images, created["id"], upload(aws, data))["statusCode"] == 202
    task_id = _the_import_task(images, aws, created["id"])
    steps = composition.import_task(Settings.from_environ())

    result = steps.register(task_id, steps.fetch(task_id))
    again = steps.register(task_id, steps.fetch(task_id))  # a retried step changes nothing

    assert result == again == {"image_id": created["id"]}
    image = show(images, created["id"])
    assert image["status"] == "active" and image["size"] == len(data)
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest() and image["os_hash_algo"] == "sha512"
    assert (image["name"], image["tags"], image["created_at"]) == (
        "cirros",
        ["a", "b"],
        created["created_at"],
    )
    assert image["os_glance_failed_import"] == "" and "os_glance_import_task" not in image
    download = call(images, api_event("GET", f"/v2/images/{created['id']}/file"))
    assert download["statusCode"] == 302


def test_a_failed_import_puts_the_image_back_to_queued_with_glances_marks(
    images: Any, aws: dict[str, str]
) -> None:
    created = create_image(images)
    assert start_import(images, created["id"], upload(aws, b"this is no qcow2"))["statusCode"] == 202
    task_id = _the_import_task(images, aws, created["id"])
    steps = composition.import_task(Settings.from_environ())

    with pytest.raises(TaskFailure):
        processing_step(steps.fetch)(task_id)
    fail_task(TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"]), task_id, "refused")
    steps.clean_up(task_id)

    image = show(images, created["id"])
    assert image["status"] == "queued"
    assert image["os_glance_failed_import"] == "default" and image["os_glance_importing_to_stores"] == ""
    assert "os_glance_import_task" not in image
    # and it can be imported again
    assert start_import(images, created["id"], upload(aws, b"again", "again.qcow2"))["statusCode"] == 202


def test_an_import_task_naming_an_image_it_was_not_started_for_fills_nothing(
    images: Any, aws: dict[str, str], tmp_path: Path
) -> None:
    # A POST /v2/tasks import whose input names someone's queued image: the image is not waiting
    # for that task, so the task fails and the image stays as it was.
    require_qemu_img()
    victim = create_image(images, project="project-b")
    tasks_api = load_handler("tasks_api")
    tasks_api.tasks_table.cache_clear()
    tasks_api.task_service.cache_clear()
    task_input = {
        "import_from": upload(aws, make_qcow2(tmp_path).read_bytes()),
        "import_from_format": "qcow2",
        "image_properties": {"disk_format": "qcow2", "container_format": "bare"},
        "image_id": victim["id"],
    }
    task = call(tasks_api, api_event("POST", "/v2/tasks", body={"type": "import", "input": task_input}))[
        "json"
    ]
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    stored = table.get(task["id"])
    assert stored is not None
    start_processing(table, stored)
    steps = composition.import_task(Settings.from_environ())

    with pytest.raises(TaskFailure):
        processing_step(steps.register)(task["id"], steps.fetch(task["id"]))
    steps.clean_up(task["id"])

    after = call(images, api_event("GET", f"/v2/images/{victim['id']}", project="project-b"))["json"]
    assert after == victim


@pytest.mark.parametrize("route", ["/v2/images", "/v2/tasks"])
def test_only_admins_make_a_public_image(images: Any, route: str) -> None:
    # Given a member, and an admin, each asking for a public image (a create, or an import's properties)
    def ask(roles: str) -> dict[str, Any]:
        if route == "/v2/images":
            return call(
                images, api_event("POST", route, body={**CREATE_IMAGE, "visibility": "public"}, roles=roles)
            )
        properties = {**IMPORT_INPUT["image_properties"], "visibility": "public"}
        body = {"type": "import", "input": {**IMPORT_INPUT, "image_properties": properties}}
        return call(tasks_api_handler(), api_event("POST", route, body=body, roles=roles))

    # When each asks, then the member gets Glance's 403 and the admin's request goes through
    refused, allowed = ask("member"), ask("member,admin")
    assert refused["statusCode"] == 403
    assert refused["json"]["error"]["message"] == "You are not authorized to complete publicize_image action."
    assert allowed["statusCode"] == 201, allowed["body"]


def _failing_source(kind: str, aws: dict[str, str], tmp_path: Path) -> str:
    """An import source that fails the task in the way `kind` names."""
    if kind == "qcow2-with-backing-file":
        require_qemu_img()
        return upload(aws, make_qcow2_backing_file(tmp_path).read_bytes(), "backed.qcow2")
    if kind == "wrong-format":
        return upload(aws, b"this is no qcow2" * 64, "text.qcow2")
    return f"s3://{aws['UPLOADS_BUCKET']}/uploads/{PROJECT}/never-uploaded.qcow2"  # source fault


@pytest.mark.parametrize("kind", ["qcow2-with-backing-file", "wrong-format", "source-missing"])
@pytest.mark.parametrize("ended_by", ["workflow", "reconciler"])
def test_a_failed_import_shows_its_failure_only_once_the_image_is_queued_again(
    images: Any,
    aws: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    ended_by: str,
) -> None:
    # Given an interoperable import whose fetch fails
    created = create_image(images)
    assert start_import(images, created["id"], _failing_source(kind, aws, tmp_path))["statusCode"] == 202
    task_id = _the_import_task(images, aws, created["id"])
    steps = composition.import_task(Settings.from_environ())
    with pytest.raises(TaskFailure) as failed:
        processing_step(steps.fetch)(task_id)
    # (every final write is watched: what a reader of the task would see the image as, then)
    seen: list[str] = []
    save = TasksTable.save_transition

    def watched(table: TasksTable, before: Any, after: Any, **kwargs: Any) -> None:
        if after.status.is_final:
            seen.append(show(images, created["id"])["status"])
        save(table, before, after, **kwargs)

    monkeypatch.setattr(TasksTable, "save_transition", watched)

    # When the failure is recorded, as the workflow's RecordFailure (or the reconciler) does, and
    # before any clean-up step runs
    if ended_by == "workflow":
        status = load_handler("task_status")
        status.lifecycle.cache_clear()
        error = {
            "Error": type(failed.value).__name__,
            "Cause": json.dumps({"errorMessage": failed.value.message}),
        }
        status.lambda_handler(
            {"action": "fail", "task_id": task_id, "error": error, "step": "fetch"}, FakeLambdaContext()
        )
    else:
        reconcile = load_handler("reconcile")
        reconcile.lifecycle.cache_clear()
        timed_out = {
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": "123456789012",
            "time": "2026-12-07T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {"name": task_id, "status": "TIMED_OUT"},
        }
        for _ in range(2):  # EventBridge may deliver it twice: the repeat changes nothing
            reconcile.lambda_handler(timed_out, FakeLambdaContext())

    # Then the image was queued (with Glance's marks) before the failure was written...
    assert seen == ["queued"]
    image = show(images, created["id"])
    assert image["os_glance_failed_import"] == "default" and "os_glance_import_task" not in image
    assert boto3.client("s3").list_objects_v2(Bucket=aws["IMAGES_BUCKET"]).get("KeyCount", 0) == 0
    # ...so an import retried at once is accepted
    retry = start_import(images, created["id"], upload(aws, b"again", "again.qcow2"))
    assert retry["statusCode"] == 202, retry["body"]


def test_a_pending_import_cancelled_before_its_workflow_ran_gives_its_image_back(
    images: Any, aws: dict[str, str]
) -> None:
    # Given an interoperable import still pending (its workflow never started)
    created = create_image(images)
    assert start_import(images, created["id"], upload(aws, b"data"))["statusCode"] == 202
    [task] = image_tasks(images, created["id"])

    # When it fails before it started (as a cancel without an execution records it)
    composition.lifecycle(Settings.from_environ()).fail(task["id"], "cancelled", "cancelled")

    # Then its image is queued again and can be imported at once
    assert show(images, created["id"])["status"] == "queued"
    assert start_import(images, created["id"], upload(aws, b"again", "again.qcow2"))["statusCode"] == 202
