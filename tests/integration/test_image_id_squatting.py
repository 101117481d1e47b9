"""No project can choose, squat or predict the id of the image another task creates (issue #23).

An import's (and a convert's) image id is random, stored with the task and never shown before the
image exists; an image found under that id that the task did not make fails the task clearly,
keeps the upload it came from, and is never reported as the task's result."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagetasks import composition
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.config import Settings
from imagetasks.domain.failures import TaskFailure
from imagetasks.domain.tasks import LEGACY_IMAGE_NAMESPACE, TaskType, new_task
from imagetasks.entrypoints.steps import processing_step
from tests.image_corpus import make_qcow2, require_qemu_img
from tests.support import (
    api_event,
    call,
    object_keys,
    start_processing,
)

VICTIM = "project-a"


def uploaded(aws: dict[str, str], data: bytes, name: str = "disk.qcow2") -> tuple[str, str]:
    key = f"uploads/{VICTIM}/{name}"
    boto3.client("s3").put_object(Bucket=aws["UPLOADS_BUCKET"], Key=key, Body=data)
    return key, f"s3://{aws['UPLOADS_BUCKET']}/{key}"


def created_import(tasks_api: Any, aws: dict[str, str], source: str) -> dict[str, Any]:
    body = {
        "type": "import",
        "input": {
            "import_from": source,
            "import_from_format": "qcow2",
            "image_properties": {"name": "victim", "disk_format": "qcow2", "container_format": "bare"},
        },
    }
    response = call(tasks_api, api_event("POST", "/v2/tasks", body=body, project=VICTIM))
    assert response["statusCode"] == 201, response["body"]
    task: dict[str, Any] = response["json"]
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    stored = table.get(task["id"])
    assert stored is not None
    start_processing(table, stored)
    return task


def upload_task(aws: dict[str, str], data: bytes) -> tuple[dict[str, Any], str]:
    """An upload and its processing import task as the upload trigger makes it (its ETag named)."""
    key, source = uploaded(aws, data)
    etag = boto3.client("s3").head_object(Bucket=aws["UPLOADS_BUCKET"], Key=key)["ETag"].strip('"')
    task_input = {
        "import_from": source,
        "import_from_format": "qcow2",
        "image_properties": {"name": "victim", "disk_format": "qcow2", "container_format": "bare"},
        "source": "s3-upload",
        "source_etag": etag,
    }
    task = new_task(TaskType.IMPORT, task_input, VICTIM)
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    table.create(task)
    start_processing(table, task)
    return {"id": task.id}, key


def victims_import(
    source_kind: str, tasks_api: Any, aws: dict[str, str], tmp_path: Path
) -> tuple[dict[str, Any], str]:
    data = make_qcow2(tmp_path).read_bytes()
    if source_kind == "upload":
        return upload_task(aws, data)
    key, source = uploaded(aws, data)
    return created_import(tasks_api, aws, source), key


def squat(images: Any, image_id: str, project: str) -> dict[str, Any]:
    body = {"id": image_id, "name": "squatter", "disk_format": "qcow2", "container_format": "bare"}
    response = call(images, api_event("POST", "/v2/images", body=body, project=project))
    assert response["statusCode"] == 201, response["body"]
    squatter: dict[str, Any] = response["json"]
    return squatter


def stored_image_id(aws: dict[str, str], task_id: str) -> str:
    task = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"]).get(task_id)
    assert task is not None and task.new_image_id is not None
    return task.new_image_id


def test_the_id_is_random_per_task_and_not_shown_before_the_image_exists(
    tasks_api: Any, aws: dict[str, str]
) -> None:
    # Given two imports of the same source
    _, source = uploaded(aws, b"data")
    first = created_import(tasks_api, aws, source)
    second = created_import(tasks_api, aws, source)

    # Then each has an image id of its own that the task id does not give away, and nothing shows it
    ids = {stored_image_id(aws, first["id"]), stored_image_id(aws, second["id"])}
    assert len(ids) == 2
    assert str(uuid.uuid5(LEGACY_IMAGE_NAMESPACE, first["id"])) not in ids
    shown = call(tasks_api, api_event("GET", f"/v2/tasks/{first['id']}", project=VICTIM))["body"]
    assert not any(image_id in shown for image_id in ids)
    assert not any(image_id in str(first) for image_id in ids)


def test_an_image_made_under_the_old_derived_id_does_not_take_the_import(
    tasks_api: Any, images: Any, aws: dict[str, str], tmp_path: Path
) -> None:
    # Given an import, and another project that made an image under the id the task used to imply
    require_qemu_img()
    task, key = upload_task(aws, make_qcow2(tmp_path).read_bytes())
    squatter = squat(images, str(uuid.uuid5(LEGACY_IMAGE_NAMESPACE, task["id"])), "project-b")
    steps = composition.import_task(Settings.from_environ())

    # When the import runs
    result = steps.register(task["id"], steps.fetch(task["id"]))

    # Then it made its own image, which its owner sees; the other image is untouched
    assert result["image_id"] != squatter["id"]
    mine = call(images, api_event("GET", f"/v2/images/{result['image_id']}", project=VICTIM))
    assert mine["statusCode"] == 200 and mine["json"]["status"] == "active"
    theirs = call(images, api_event("GET", f"/v2/images/{squatter['id']}", project="project-b"))["json"]
    assert theirs == squatter
    assert key not in object_keys(aws["UPLOADS_BUCKET"])  # imported: the upload is gone


@pytest.mark.parametrize("squatter_project", ["project-b", VICTIM])
@pytest.mark.parametrize("source_kind", ["upload", "url-or-s3-task"])
def test_an_image_already_holding_the_id_fails_the_import_clearly_and_keeps_the_upload(
    tasks_api: Any,
    images: Any,
    aws: dict[str, str],
    tmp_path: Path,
    squatter_project: str,
    source_kind: str,
) -> None:
    # Given an import whose image id someone learned, and a queued image they created under it first
    require_qemu_img()
    task, key = victims_import(source_kind, tasks_api, aws, tmp_path)
    image_id = stored_image_id(aws, task["id"])
    squatter = squat(images, image_id, squatter_project)
    steps = composition.import_task(Settings.from_environ())
    staged = steps.fetch(task["id"])

    # When the import registers its image
    with pytest.raises(TaskFailure) as failed:
        processing_step(steps.register)(task["id"], staged)
    steps.clean_up(task["id"])

    # Then it fails saying why, the other image is as it was, the upload is kept, nothing is left
    assert f"Image {image_id}" in failed.value.message and "not created by this task" in failed.value.message
    after = call(images, api_event("GET", f"/v2/images/{image_id}", project=squatter_project))["json"]
    assert after == squatter
    assert key in object_keys(aws["UPLOADS_BUCKET"])
    assert object_keys(aws["STAGING_BUCKET"]) == [] and object_keys(aws["IMAGES_BUCKET"]) == []


def test_an_image_taking_the_id_while_register_runs_fails_the_import_and_removes_its_bits(
    tasks_api: Any, images: Any, aws: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an import, and an image created under its id between register's read and its write
    require_qemu_img()
    task, key = upload_task(aws, make_qcow2(tmp_path).read_bytes())
    image_id = stored_image_id(aws, task["id"])
    steps = composition.import_task(Settings.from_environ())
    staged = steps.fetch(task["id"])
    real_get = steps.images.get
    reads: list[str] = []

    def get_then_squat(wanted: str) -> Any:
        found = real_get(wanted)
        if wanted == image_id and not reads:
            reads.append(wanted)
            squat(images, image_id, "project-b")
        return found

    monkeypatch.setattr(steps.images, "get", get_then_squat)

    # When register writes the image
    with pytest.raises(TaskFailure):
        processing_step(steps.register)(task["id"], staged)

    # Then the import's bits and staged data are gone, the upload stays, the image is the other's
    assert object_keys(aws["IMAGES_BUCKET"]) == [] and object_keys(aws["STAGING_BUCKET"]) == []
    assert key in object_keys(aws["UPLOADS_BUCKET"])
    theirs = call(images, api_event("GET", f"/v2/images/{image_id}", project="project-b"))["json"]
    assert theirs["name"] == "squatter" and theirs["status"] == "queued"
