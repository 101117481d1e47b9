"""The import task's steps on moto: fetch from S3, register, conversion on import, clean-up."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagetasks import composition
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.config import Settings
from imagetasks.domain.failures import TaskFailure
from imagetasks.domain.tasks import TaskStatus, TaskType, new_task
from imagetasks.entrypoints.steps import processing_step
from imagetasks.services import convert_export as conversion
from imagetasks.services import import_task as import_task_module
from tests.image_corpus import (
    LoopbackListener,
    make_qcow2,
    make_qcow2_backing_file,
    make_vmdk_parent,
)
from tests.support import created_image_id, fail_task, object_keys, start_processing

pytestmark = pytest.mark.qemu_img  # skipped where qemu-img is not installed


def stored_import(aws: dict[str, str], image: Path, owner: str = "p1", disk_format: str = "qcow2") -> str:
    """An uploaded image and a processing import task pointing at it; the task's id."""
    key = f"uploads/{owner}/{image.name}"
    boto3.client("s3").put_object(Bucket=aws["UPLOADS_BUCKET"], Key=key, Body=image.read_bytes())
    task = new_task(
        TaskType.IMPORT,
        {
            "import_from": f"s3://{aws['UPLOADS_BUCKET']}/{key}",
            "import_from_format": disk_format,
            "image_properties": {
                "name": "disk",
                "disk_format": disk_format,
                "container_format": "bare",
                "os_distro": "cirros",
            },
        },
        owner,
    )
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    table.create(task)
    start_processing(table, task)
    return task.id


def test_fetch_then_register_makes_an_active_image_and_leaves_no_staging(
    aws: dict[str, str], tmp_path: Path
) -> None:
    image = make_qcow2(tmp_path)
    task_id = stored_import(aws, image)
    steps = composition.import_task(Settings.from_environ())

    staged = steps.fetch(task_id)
    result = steps.register(task_id, staged)

    assert result == {"image_id": created_image_id(task_id)}
    registered = steps.images.get(result["image_id"])
    assert registered is not None and registered.disk_format == "qcow2" and registered.owner == "p1"
    assert registered.properties == {"os_distro": "cirros"} and registered.name == "disk"
    assert registered.os_hash_value == hashlib.sha512(image.read_bytes()).hexdigest()
    assert object_keys(aws["STAGING_BUCKET"]) == []
    assert object_keys(aws["IMAGES_BUCKET"]) == [f"images/{result['image_id']}"]
    assert steps.register(task_id, staged) == result  # a repeated step finds the same image


def test_a_deployment_with_conversion_format_stores_imports_converted_and_inspected(
    aws: dict[str, str], tmp_path: Path
) -> None:
    image = make_qcow2(tmp_path)
    task_id = stored_import(aws, image)
    steps = composition.import_task(Settings.from_environ({**aws, "CONVERSION_FORMAT": "raw"}))

    result = steps.register(task_id, steps.fetch(task_id))

    registered = steps.images.get(result["image_id"])
    assert registered is not None and registered.disk_format == "raw"
    stored = boto3.client("s3").get_object(Bucket=aws["IMAGES_BUCKET"], Key=registered.key)["Body"].read()
    assert hashlib.sha512(stored).hexdigest() == registered.os_hash_value and len(stored) == registered.size
    local = tmp_path / "stored.raw"
    local.write_bytes(stored)
    info = subprocess.run(
        ["qemu-img", "info", "-f", "raw", "--output=json", str(local)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"format": "raw"' in info.stdout
    assert object_keys(aws["STAGING_BUCKET"]) == []


def test_conversion_on_import_checks_the_data_again_before_qemu_img_runs(
    aws: dict[str, str], tmp_path: Path
) -> None:
    # A deployment that switched the import's safety checks off, and converts imports: the VMDK
    # naming a parent on the network is staged, but never handed to qemu-img nor followed.
    listener = LoopbackListener()
    try:
        image = make_vmdk_parent(tmp_path, f"nbd://127.0.0.1:{listener.port}")
        task_id = stored_import(aws, image, disk_format="vmdk")
        environ = {**aws, "CONVERSION_FORMAT": "raw", "SAFETY_CHECKS": "false"}
        steps = composition.import_task(Settings.from_environ(environ))
        staged = steps.fetch(task_id)

        with pytest.raises(TaskFailure) as failed:
            processing_step(steps.register)(task_id, staged)
        steps.clean_up(task_id)

        assert (
            "failed this cloud's checks: Image data is vmdk and is not allowed: its descriptor names a "
            in (failed.value.message)
        )
        assert object_keys(aws["IMAGES_BUCKET"]) == [] and object_keys(aws["STAGING_BUCKET"]) == []
        time.sleep(0.3)
        assert listener.connections == 0
    finally:
        listener.close()


def test_a_refused_image_becomes_a_task_failure_and_clean_up_leaves_nothing(
    aws: dict[str, str], tmp_path: Path
) -> None:
    image = make_qcow2_backing_file(tmp_path)
    task_id = stored_import(aws, image)
    steps = composition.import_task(Settings.from_environ())

    with pytest.raises(TaskFailure, match="backing file"):
        processing_step(steps.fetch)(task_id)
    steps.clean_up(task_id)

    assert object_keys(aws["STAGING_BUCKET"]) == []
    assert object_keys(aws["IMAGES_BUCKET"]) == []
    assert steps.images.get(created_image_id(task_id)) is None


def test_clean_up_removes_image_bits_that_never_got_a_record(aws: dict[str, str], tmp_path: Path) -> None:
    task_id = stored_import(aws, make_qcow2(tmp_path))
    steps = composition.import_task(Settings.from_environ())
    staged = steps.fetch(task_id)
    boto3.client("s3").put_object(
        Bucket=aws["IMAGES_BUCKET"], Key=f"images/{created_image_id(task_id)}", Body=b"half"
    )

    steps.clean_up(task_id)

    assert object_keys(aws["IMAGES_BUCKET"]) == []
    assert object_keys(aws["STAGING_BUCKET"]) == [] and staged["staged_key"].startswith(task_id)


def test_an_uploaded_source_is_removed_once_imported_and_kept_when_not(
    aws: dict[str, str], tmp_path: Path
) -> None:
    image = make_qcow2(tmp_path)
    task_id = stored_import(aws, image)
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    task = table.get(task_id)
    assert task is not None
    upload_task = task.model_copy(
        update={
            "id": "9b0f7c8e-1111-4c3e-8a55-5d2f0a2b6d11",
            "input": {**(task.input or {}), "source": "s3-upload"},
        }
    )
    table.create(upload_task)  # a copy of a processing task: processing too
    steps = composition.import_task(Settings.from_environ())

    steps.register(upload_task.id, steps.fetch(upload_task.id))

    assert object_keys(aws["UPLOADS_BUCKET"]) == []


def stored_upload_import(aws: dict[str, str], image: Path) -> tuple[str, str]:
    """An upload and its processing import task, as the trigger makes it (with the object's ETag)."""
    task_id = stored_import(aws, image)
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    task = table.get(task_id)
    assert task is not None and task.input is not None
    key = task.input["import_from"].split("/", 3)[3]
    etag = boto3.client("s3").head_object(Bucket=aws["UPLOADS_BUCKET"], Key=key)["ETag"].strip('"')
    upload_task = task.model_copy(
        update={
            "id": "9b0f7c8e-2222-4c3e-8a55-5d2f0a2b6d11",
            "input": {**task.input, "source": "s3-upload", "source_etag": etag},
        }
    )
    table.create(upload_task)  # a copy of a processing task: processing too
    return upload_task.id, key


def test_the_key_uploaded_again_during_the_import_keeps_the_new_upload(
    aws: dict[str, str], tmp_path: Path
) -> None:
    # Given an upload's import whose data is fetched
    image = make_qcow2(tmp_path)
    task_id, key = stored_upload_import(aws, image)
    steps = composition.import_task(Settings.from_environ())
    staged = steps.fetch(task_id)

    # When the same key is uploaded again before the import registers its image
    newer = b"newer upload of the same name"
    boto3.client("s3").put_object(Bucket=aws["UPLOADS_BUCKET"], Key=key, Body=newer)
    result = steps.register(task_id, staged)

    # Then the image holds the first upload's data, and the new upload is still there, intact
    registered = steps.images.get(result["image_id"])
    assert registered is not None
    assert registered.os_hash_value == hashlib.sha512(image.read_bytes()).hexdigest()
    kept = boto3.client("s3").get_object(Bucket=aws["UPLOADS_BUCKET"], Key=key)["Body"].read()
    assert kept == newer


def test_the_key_uploaded_again_before_the_fetch_fails_the_task_and_keeps_the_new_upload(
    aws: dict[str, str], tmp_path: Path
) -> None:
    # Given an upload's import task, and the same key uploaded again before the task reads it
    task_id, key = stored_upload_import(aws, make_qcow2(tmp_path))
    newer = b"QFI\xfb newer upload"
    boto3.client("s3").put_object(Bucket=aws["UPLOADS_BUCKET"], Key=key, Body=newer)
    steps = composition.import_task(Settings.from_environ())

    # When the fetch runs
    with pytest.raises(TaskFailure) as failed:
        processing_step(steps.fetch)(task_id)
    steps.clean_up(task_id)

    # Then the task says what happened and what to do; nothing of the new upload was read or removed
    assert failed.value.message == (
        f"The upload s3://{aws['UPLOADS_BUCKET']}/{key} was replaced by a new upload while this "
        "task was importing it, so this task stopped (the new upload is imported by a task of its "
        "own). To import the image this task was for, upload it again."
    )
    assert object_keys(aws["STAGING_BUCKET"]) == []
    kept = boto3.client("s3").get_object(Bucket=aws["UPLOADS_BUCKET"], Key=key)["Body"].read()
    assert kept == newer


def test_an_upload_task_without_a_recorded_etag_removes_only_the_object_it_read(
    aws: dict[str, str], tmp_path: Path
) -> None:
    # Given an upload task created before tasks recorded the ETag: the fetch records what it read
    task_id = stored_import(aws, make_qcow2(tmp_path))
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    task = table.get(task_id)
    assert task is not None
    older = task.model_copy(
        update={
            "id": "9b0f7c8e-3333-4c3e-8a55-5d2f0a2b6d11",
            "input": {**(task.input or {}), "source": "s3-upload"},
        }
    )
    table.create(older)
    steps = composition.import_task(Settings.from_environ())
    staged = steps.fetch(older.id)
    key = str((older.input or {})["import_from"]).split("/", 3)[3]

    # When the key is uploaded again, then the import registers its image
    boto3.client("s3").put_object(Bucket=aws["UPLOADS_BUCKET"], Key=key, Body=b"newer")
    steps.register(older.id, staged)

    # Then the newer upload is kept
    assert object_keys(aws["UPLOADS_BUCKET"]) == [key]


# ------------------------------------------------------------------ a step that outlives its task
def failing_first(table: TasksTable, task_id: str, work: Callable[..., Any]) -> Callable[..., Any]:
    """`work`, but the task fails (a step timeout, the reconciler) just before it runs."""

    def run(*args: Any, **kwargs: Any) -> Any:
        fail_task(table, task_id, LATE_MESSAGE)
        return work(*args, **kwargs)

    return run


LATE_MESSAGE = "The task's processing step took longer than allowed and was stopped."


def image_records(aws: dict[str, str]) -> int:
    scan = boto3.client("dynamodb").scan(TableName=aws["IMAGES_TABLE"])
    return sum(1 for item in scan["Items"] if item.get("record", {}).get("S") == "image")


@pytest.mark.parametrize("conversion_format", ["", "raw"], ids=["copied", "converted"])
def test_a_task_that_fails_while_register_runs_gets_no_image_and_no_data_is_left(
    aws: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conversion_format: str
) -> None:
    # Given an import whose data is staged, and a register step during which the task fails
    task_id = stored_import(aws, make_qcow2(tmp_path))
    steps = composition.import_task(Settings.from_environ({**aws, "CONVERSION_FORMAT": conversion_format}))
    staged = steps.fetch(task_id)
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    if conversion_format:  # the image is converted, then uploaded to images/<id>
        monkeypatch.setattr(
            conversion, "stage_stream", failing_first(table, task_id, conversion.stage_stream)
        )
    else:  # the staged data is copied to images/<id>
        monkeypatch.setattr(steps.objects, "copy", failing_first(table, task_id, steps.objects.copy))

    # When the step finishes its work
    with pytest.raises(TaskFailure, match="no longer processing"):
        processing_step(steps.register)(task_id, staged)

    # Then no image was registered, its data and the staged data are gone, the failure stands
    assert steps.images.get(created_image_id(task_id)) is None and image_records(aws) == 0
    assert object_keys(aws["IMAGES_BUCKET"]) == []
    assert object_keys(aws["STAGING_BUCKET"]) == []
    task = table.get(task_id)
    assert task is not None and task.status is TaskStatus.FAILURE
    assert task.message == LATE_MESSAGE and task.result is None and task.image_id is None


def test_a_task_that_fails_while_fetch_runs_keeps_no_staged_data(
    aws: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an import whose task fails while its source is being fetched
    task_id = stored_import(aws, make_qcow2(tmp_path))
    steps = composition.import_task(Settings.from_environ())
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    monkeypatch.setattr(
        import_task_module,
        "fetch_and_check",
        failing_first(table, task_id, import_task_module.fetch_and_check),
    )

    # When the fetch finishes
    with pytest.raises(TaskFailure, match="no longer processing"):
        processing_step(steps.fetch)(task_id)

    # Then what it staged is removed at once (not left for the bucket's lifecycle rule)
    assert object_keys(aws["STAGING_BUCKET"]) == []
    assert object_keys(aws["IMAGES_BUCKET"]) == [] and image_records(aws) == 0
