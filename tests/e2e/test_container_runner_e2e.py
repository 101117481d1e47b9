"""The container runner end to end: work too large for the step's Lambda function runs, unchanged,
as an ECS task (locally: the worker process the local stack starts for RunTask)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from imagetasks.adapters.qemu import QemuImg
from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import file_digests

MiB = 1024 * 1024
#: With the tests' 512 MiB of Lambda working space, a converted copy of this disk (counted as large
#: as the disk, whatever the format), the source and the margin cannot fit Lambda; the container
#: runner has 200 GiB.
VIRTUAL_SIZE = 384 * MiB


pytestmark = pytest.mark.qemu_img  # skipped where qemu-img is not installed


def sparse_disk(path: Path) -> Path:
    """A raw disk of VIRTUAL_SIZE with data at its start, middle and end (the rest unallocated)."""
    with path.open("wb") as disk:
        for offset in (0, VIRTUAL_SIZE // 2, VIRTUAL_SIZE - MiB):
            disk.seek(offset)
            disk.write(os.urandom(MiB))
    return path


def states_entered(stack: Any, task_id: str) -> list[str]:
    machine = next(iter(stack.state_machines.values()))
    arn = machine.replace(":stateMachine:", ":execution:") + f":{task_id}"
    history = stack.client("stepfunctions").get_execution_history(executionArn=arn, maxResults=1000)
    return [
        e["stateEnteredEventDetails"]["name"] for e in history["events"] if "stateEnteredEventDetails" in e
    ]


def imported_large_qcow2(stack: Any, image_server: Any, tmp_path: Path, name: str) -> tuple[Path, str]:
    """A qcow2 of a VIRTUAL_SIZE disk (a small file), imported on Lambda: (the disk, the image id)."""
    disk = sparse_disk(tmp_path / f"{name}.raw")
    qcow2 = image_server.root / f"{name}.qcow2"
    QemuImg().convert(disk, "raw", qcow2, "qcow2", 60)
    task = create_task(stack, import_body(image_server.url(qcow2.name), "qcow2"))
    imported, _ = wait_for_task(stack, task["id"])
    assert imported["status"] == "success", imported["message"]
    return disk, str(imported["result"]["image_id"])


def convert(stack: Any, image_id: str, disk_format: str) -> dict[str, Any]:
    task = create_task(
        stack, {"type": "convert", "input": {"image_id": image_id, "disk_format": disk_format}}
    )
    finished, _ = wait_for_task(stack, task["id"], timeout=120)
    return finished


def image_keys(stack: Any) -> set[str]:
    listing = stack.client("s3").list_objects_v2(Bucket=stack.buckets["ImagesBucket"], Prefix="images/")
    return {item["Key"] for item in listing.get("Contents", [])}


@pytest.mark.artifact
def test_a_convert_larger_than_lambdas_working_space_runs_on_the_container_runner(
    local_stack: Any, image_server: Any, tmp_path: Path
) -> None:
    # Given a qcow2 of a 384 MiB disk (a small file), imported on Lambda
    disk, source_id = imported_large_qcow2(local_stack, image_server, tmp_path, "runner-source")
    runs_before = local_stack.stack.ecs_hook.started

    # When it is converted to vmdk, which counts as a copy as large as the 384 MiB disk (how much of
    # a disk is allocated is not known before converting): Lambda's 512 MiB cannot hold it with the
    # source. (The copy made is small, so little moves through the local S3.)
    converted = convert(local_stack, source_id, "vmdk")

    # Then the convert step ran as an ECS task and made the image Lambda could not
    assert converted["status"] == "success", converted["message"]
    assert local_stack.stack.ecs_hook.started == runs_before + 1
    entered = states_entered(local_stack, converted["id"])
    assert entered.count("Convert") == 1 and "RunInContainer" in entered and "DoneInContainer" in entered
    image_id = converted["result"]["image_id"]
    image = local_stack.client("dynamodb").get_item(
        TableName=local_stack.tables["ImagesTable"], Key={"id": {"S": image_id}}
    )["Item"]
    stored = tmp_path / "converted.vmdk"
    stored.write_bytes(
        local_stack.client("s3")
        .get_object(Bucket=local_stack.buckets["ImagesBucket"], Key=f"images/{image_id}")["Body"]
        .read()
    )
    assert image["disk_format"]["S"] == "vmdk" and int(image["size"]["N"]) == stored.stat().st_size
    raw = tmp_path / "converted.raw"
    QemuImg().convert(stored, "vmdk", raw, "raw", 60)
    assert file_digests(raw) == file_digests(disk)


def test_a_refusal_on_the_container_runner_fails_the_task_with_the_steps_own_message(
    local_stack: Any, image_server: Any, tmp_path: Path
) -> None:
    # Given an imported image whose stored data was then replaced behind the service's back
    _, source_id = imported_large_qcow2(local_stack, image_server, tmp_path, "runner-tampered")
    other = image_server.root / "runner-other.qcow2"
    QemuImg().convert(sparse_disk(tmp_path / "other.raw"), "raw", other, "qcow2", 60)
    key = f"images/{source_id}"
    local_stack.client("s3").put_object(
        Bucket=local_stack.buckets["ImagesBucket"], Key=key, Body=other.read_bytes()
    )
    keys_before = image_keys(local_stack)

    # When a convert too large for Lambda runs on the container runner
    failed = convert(local_stack, source_id, "raw")

    # Then the worker's refusal is the task's, with its code and words, and no image was made
    assert failed["status"] == "failure"
    assert failed["error_code"] == "image_unavailable"
    assert failed["message"].startswith(f"The data of image {source_id} does not match its os_hash_value")
    entered = states_entered(local_stack, failed["id"])
    assert "RunInContainer" in entered and "RunnerFailed" in entered
    assert image_keys(local_stack) == keys_before
