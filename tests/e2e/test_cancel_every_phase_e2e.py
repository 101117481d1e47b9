"""Cancelling in the phases the other cancel tests do not reach, on the local stack: an import whose
source trickles (its connection must be closed soon, not at the end of the source), an import in
its register step, and a convert on the container runner (its worker must stop).

Pending tasks of every type: test_cancel_phases_e2e.py; an import fetching a held source:
test_cancel_e2e.py; a convert downloading and an export uploading: test_cancel_convert_export_e2e.py;
a cancel racing a success, many times: tests/integration/test_cancel_race.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.e2e.test_cancel_convert_export_e2e import held_s3, wait_until, workspaces
from tests.e2e.test_cancel_e2e import cancel
from tests.e2e.test_container_runner_e2e import imported_large_qcow2, states_entered
from tests.image_corpus import make_raw, require_qemu_img
from tests.support import created_image_id

PROJECT = "cancel-every-phase"


def cancelled(stack: Any, task_id: str, project: str = PROJECT) -> dict[str, Any]:
    answer = cancel(stack, task_id, project=project)
    assert answer.status_code == 202, answer.text
    finished, _ = wait_for_task(stack, task_id, project=project, timeout=60)
    assert finished["status"] == "failure" and finished["error_code"] == "cancelled", finished
    assert finished["message"] == f"The task was cancelled by user {project}-user of project {project}."
    return finished


def assert_no_image_nor_data(stack: Any, task_id: str, project: str = PROJECT) -> None:
    image_id = created_image_id(task_id, stack.tables["TasksTable"], stack.client("dynamodb"))
    shown = requests.get(f"{stack.api_url}/v2/images/{image_id}", headers=stack.headers(project), timeout=30)
    assert shown.status_code == 404
    s3 = stack.client("s3")
    images, staging = stack.buckets["ImagesBucket"], stack.buckets["StagingBucket"]
    assert s3.list_objects_v2(Bucket=images, Prefix=f"images/{image_id}").get("KeyCount", 0) == 0
    assert s3.list_objects_v2(Bucket=staging, Prefix=f"{task_id}/").get("KeyCount", 0) == 0
    for bucket in (images, staging):
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert [u for u in uploads if task_id in u["Key"] or image_id in u["Key"]] == []


def test_an_import_cancelled_while_its_source_trickles_closes_the_source(
    local_stack: Any, image_server: Any
) -> None:
    # Given an import whose source sends 1 KiB every 0.2 s (never silent: no read timeout comes)
    name = f"trickle-{uuid.uuid4().hex}.raw"
    requested, gone = image_server.trickle(name)
    task = create_task(local_stack, import_body(image_server.url(name), "raw"), project=PROJECT)
    assert requested.wait(60), "the import step never fetched its source"

    # When its owner cancels it
    cancelled(local_stack, task["id"])

    # Then the step closes the source's connection (within seconds; the deadline is generous for
    # a loaded machine, far below the two minutes the source would trickle) and leaves nothing
    assert gone.wait(20), "the cancelled import kept reading its source"
    assert_no_image_nor_data(local_stack, task["id"])


def test_an_import_cancelled_in_its_register_step_makes_no_image(local_stack: Any, image_server: Any) -> None:
    # Given an import whose register step is copying the staged data (held there)
    raw = make_raw(image_server.root).rename(image_server.root / f"register-{uuid.uuid4().hex}.raw")
    staging = local_stack.buckets["StagingBucket"]
    with held_s3("head_object", lambda bucket, key: bucket == staging and key.endswith("/source")) as (
        reached,
        release,
    ):
        task = create_task(local_stack, import_body(image_server.url(raw.name), "raw"), project=PROJECT)
        assert reached.wait(60), "the register step never read the staged data"

        # When its owner cancels it, and the step then goes on
        answer = cancel(local_stack, task["id"], project=PROJECT)
        assert answer.status_code == 202, answer.text
        release.set()
        finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT, timeout=60)

    # Then the task ended cancelled and no image, image data or staged data of it exists, even
    # after the step had time to finish what it was doing
    assert finished["error_code"] == "cancelled", finished
    wait_until(lambda: not workspaces(task["id"]), "the step never stopped")
    # (the register step works without a workspace: wait until no import step runs any more)
    wait_until(
        lambda: local_stack.stack.runner.running("ImportTaskFunction") == 0, "the step never ended", 60
    )
    assert_no_image_nor_data(local_stack, task["id"])


@pytest.mark.artifact
def test_a_convert_cancelled_on_the_container_runner_stops_its_worker(
    local_stack: Any, image_server: Any, tmp_path: Path
) -> None:
    require_qemu_img()
    # Given an image too large for Lambda's working space (imported by the project the container
    # runner tests use), and its convert held on the container runner as its worker reads the image
    owner = "demo-project"
    _, source_id = imported_large_qcow2(local_stack, image_server, tmp_path, f"cancel-{uuid.uuid4().hex[:8]}")
    images = local_stack.buckets["ImagesBucket"]
    hook = local_stack.stack.ecs_hook
    with held_s3("get_object", lambda bucket, key: (bucket, key) == (images, f"images/{source_id}")) as (
        reached,
        release,
    ):
        task = create_task(
            local_stack, {"type": "convert", "input": {"image_id": source_id, "disk_format": "raw"}}, owner
        )
        assert reached.wait(120), "the worker never read the image"
        assert hook.running(), "no worker runs"

        # When its owner cancels it
        answer = cancel(local_stack, task["id"], project=owner)
        assert answer.status_code == 202, answer.text
        release.set()
        finished, _ = wait_for_task(local_stack, task["id"], project=owner, timeout=60)

    # Then it ended cancelled, its worker stopped, and no converted image or data exists
    assert finished["error_code"] == "cancelled", finished
    assert "RunInContainer" in states_entered(local_stack, task["id"])
    wait_until(lambda: not hook.running(), "the worker kept running", seconds=60)
    new_id = created_image_id(task["id"], local_stack.tables["TasksTable"], local_stack.client("dynamodb"))
    shown = requests.get(
        f"{local_stack.api_url}/v2/images/{new_id}", headers=local_stack.headers(owner), timeout=30
    )
    assert shown.status_code == 404
    s3 = local_stack.client("s3")
    assert s3.list_objects_v2(Bucket=images, Prefix=f"images/{new_id}").get("KeyCount", 0) == 0
    assert [
        u for u in s3.list_multipart_uploads(Bucket=images).get("Uploads", []) if new_id in u["Key"]
    ] == []
