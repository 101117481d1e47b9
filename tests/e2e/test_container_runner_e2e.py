"""The container runner end to end: work too large for the step's Lambda function runs, unchanged,
as an ECS task (locally: the worker process the local stack starts for RunTask)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from imagetasks.adapters.qemu import QemuImg
from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import file_digests, require_qemu_img

MiB = 1024 * 1024
#: With the tests' 512 MiB of Lambda working space, a raw copy of this disk (plus the source and
#: the margin) cannot fit Lambda; the container runner has 200 GiB.
VIRTUAL_SIZE = 384 * MiB


@pytest.fixture(autouse=True)
def _qemu() -> None:
    require_qemu_img()


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


@pytest.mark.artifact
def test_a_convert_larger_than_lambdas_working_space_runs_on_the_container_runner(
    local_stack: Any, image_server: Any, tmp_path: Path
) -> None:
    # Given a qcow2 of a 384 MiB disk (a small file), imported on Lambda
    disk = sparse_disk(tmp_path / "disk.raw")
    qcow2 = image_server.root / "runner-source.qcow2"
    QemuImg().convert(disk, "raw", qcow2, "qcow2", 60)
    task = create_task(local_stack, import_body(image_server.url(qcow2.name), "qcow2"))
    imported, _ = wait_for_task(local_stack, task["id"])
    assert imported["status"] == "success", imported["message"]
    runs_before = local_stack.stack.ecs_hook.started

    # When it is converted to raw: a 384 MiB copy, which Lambda's 512 MiB cannot hold with the source
    task = create_task(
        local_stack,
        {"type": "convert", "input": {"image_id": imported["result"]["image_id"], "disk_format": "raw"}},
    )
    converted, _ = wait_for_task(local_stack, task["id"], timeout=120)

    # Then the convert step ran as an ECS task and made the image Lambda could not
    assert converted["status"] == "success", converted["message"]
    assert local_stack.stack.ecs_hook.started == runs_before + 1
    entered = states_entered(local_stack, task["id"])
    assert entered.count("Convert") == 1 and "RunInContainer" in entered and "DoneInContainer" in entered
    image_id = converted["result"]["image_id"]
    image = local_stack.client("dynamodb").get_item(
        TableName=local_stack.tables["ImagesTable"], Key={"id": {"S": image_id}}
    )["Item"]
    raw = tmp_path / "converted.raw"
    raw.write_bytes(
        local_stack.client("s3")
        .get_object(Bucket=local_stack.buckets["ImagesBucket"], Key=f"images/{image_id}")["Body"]
        .read()
    )
    assert file_digests(raw) == file_digests(disk)
    assert image["disk_format"]["S"] == "raw" and int(image["size"]["N"]) == VIRTUAL_SIZE
