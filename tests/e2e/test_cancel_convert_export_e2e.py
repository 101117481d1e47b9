"""Cancelling a convert and an export on the local stack while their step works.

The step is held where it talks to S3 (moto's backend, in this process, waits on an event: the
S3 counterpart of the image server's `hold`), so the cancel lands in a known phase with no timing
involved. The working directory the step opens (named after its task) shows where the step is:
there while it works, removed when it stopped.
"""

from __future__ import annotations

import ast
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.e2e.test_cancel_e2e import cancel
from tests.e2e.test_real_clients import glance, table_value
from tests.image_corpus import make_raw
from tests.support import created_image_id

PROJECT = "cancel-convert-project"
WORK_ROOT = Path(tempfile.gettempdir()) / "imagetasks-work"


pytestmark = pytest.mark.qemu_img  # skipped where qemu-img is not installed


@contextmanager
def held_s3(
    method: str, holds: Callable[[str, str], bool]
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """moto's S3Backend.`method` (bucket, key or upload id, ...) waits for the second event when
    `holds` says so; the first is set when such a call arrives."""
    from moto.s3.models import S3Backend

    original = getattr(S3Backend, method)
    reached, release = threading.Event(), threading.Event()

    def held(backend: Any, bucket: str, name: str, *args: Any, **kwargs: Any) -> Any:
        if holds(bucket, name):
            reached.set()
            release.wait(60)
        return original(backend, bucket, name, *args, **kwargs)

    setattr(S3Backend, method, held)
    try:
        yield reached, release
    finally:
        release.set()
        setattr(S3Backend, method, original)


def imported_image(stack: Any, image_server: Any, name: str) -> str:
    raw = make_raw(image_server.root).rename(image_server.root / name)
    task = create_task(stack, import_body(image_server.url(raw.name), "raw"), project=PROJECT)
    finished, _ = wait_for_task(stack, task["id"], project=PROJECT)
    assert finished["status"] == "success", finished["message"]
    return str(finished["result"]["image_id"])


def task_now(stack: Any, task_id: str) -> dict[str, Any]:
    answer = requests.get(f"{stack.api_url}/v2/tasks/{task_id}", headers=stack.headers(PROJECT), timeout=30)
    result: dict[str, Any] = answer.json()
    return result


def workspaces(task_id: str) -> list[Path]:
    return list(WORK_ROOT.glob(f"*-{task_id}-*")) if WORK_ROOT.exists() else []


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def cancelled_by_owner(stack: Any, task_id: str) -> dict[str, Any]:
    answer = cancel(stack, task_id, project=PROJECT)
    assert answer.status_code == 202, answer.text
    finished, _ = wait_for_task(stack, task_id, project=PROJECT, timeout=30)
    return finished


def assert_cancelled(finished: dict[str, Any]) -> None:
    assert finished["status"] == "failure"
    assert finished["error_code"] == "cancelled"
    assert finished["message"] == f"The task was cancelled by user {PROJECT}-user of project {PROJECT}."
    assert finished["result"] is None


def test_a_convert_cancelled_while_it_downloads_stops_and_makes_no_image(
    local_stack: Any, image_server: Any
) -> None:
    # Given an image, and a convert of it whose step is reading the image's data (held there)
    image_id = imported_image(local_stack, image_server, "cancel-convert.raw")
    images_bucket = local_stack.buckets["ImagesBucket"]
    with held_s3(
        "get_object", lambda bucket, key: (bucket, key) == (images_bucket, f"images/{image_id}")
    ) as (
        reached,
        release,
    ):
        task = create_task(
            local_stack, {"type": "convert", "input": {"image_id": image_id, "disk_format": "qcow2"}}, PROJECT
        )
        assert reached.wait(30), "the convert step never read its image"
        shown = task_now(local_stack, task["id"])
        assert shown["status"] == "processing"
        assert shown["progress"]["step"] == "download" and shown["progress"]["bytes_done"] == 0
        assert workspaces(task["id"]), "the step has no working directory"

        # When its owner cancels it
        finished = cancelled_by_owner(local_stack, task["id"])
        release.set()

        # Then it failed as cancelled, its step stopped, and no image or file of it exists
        assert_cancelled(finished)
        wait_until(lambda: not workspaces(task["id"]), "the step never stopped")
    new_id = created_image_id(task["id"], local_stack.tables["TasksTable"], local_stack.client("dynamodb"))
    image = requests.get(
        f"{local_stack.api_url}/v2/images/{new_id}", headers=local_stack.headers(PROJECT), timeout=30
    )
    assert image.status_code == 404
    s3 = local_stack.client("s3")
    assert s3.list_objects_v2(Bucket=images_bucket, Prefix=f"images/{new_id}").get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket=images_bucket).get("Uploads", []) == []
    assert task_now(local_stack, task["id"])["progress"]["step"] == "download"  # no later phase began


def test_an_export_cancelled_while_it_uploads_stops_and_leaves_no_file(
    local_stack: Any, image_server: Any
) -> None:
    # Given an image, and an export of it to another format whose step is uploading (held there)
    image_id = imported_image(local_stack, image_server, "cancel-export.raw")
    exports_bucket = local_stack.buckets["ExportsBucket"]
    with held_s3("upload_part", lambda bucket, _upload: bucket == exports_bucket) as (reached, release):
        task = create_task(
            local_stack, {"type": "export", "input": {"image_id": image_id, "disk_format": "vmdk"}}, PROJECT
        )
        assert reached.wait(30), "the export step never uploaded"
        shown = task_now(local_stack, task["id"])
        assert shown["status"] == "processing" and shown["progress"]["step"] == "upload"
        assert shown["progress"]["bytes_total"] > 0

        # When its owner cancels it
        finished = cancelled_by_owner(local_stack, task["id"])
        release.set()

        # Then it failed as cancelled, its step stopped, and no export file (not even a part) exists
        assert_cancelled(finished)
        wait_until(lambda: not workspaces(task["id"]), "the step never stopped")
    s3 = local_stack.client("s3")
    prefix = f"{PROJECT}/{task['id']}/"
    # glance task-show (which checks the task against the served schema) shows where it stopped
    shown = glance(local_stack, local_stack.token(PROJECT), "task-show", task["id"])
    assert shown.returncode == 0, shown.stderr
    assert table_value(shown.stdout, "error_code") == "cancelled"
    assert ast.literal_eval(table_value(shown.stdout, "progress"))["step"] == "upload"
    assert s3.list_objects_v2(Bucket=exports_bucket, Prefix=prefix).get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket=exports_bucket, Prefix=prefix).get("Uploads", []) == []
