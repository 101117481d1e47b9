"""An export that fails in its step (its image's data is gone) ends in failure, and the workflow's
clean-up (the status function, under its own role) leaves no export file or unfinished upload."""

from __future__ import annotations

from typing import Any

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import make_raw

PROJECT = "failed-export-project"


def test_an_export_whose_image_data_is_gone_fails_and_leaves_no_file(
    local_stack: Any, image_server: Any
) -> None:
    # Given an image whose data has gone from the images bucket
    raw = make_raw(image_server.root).rename(image_server.root / "failed-export.raw")
    imported, _ = wait_for_task(
        local_stack,
        create_task(local_stack, import_body(image_server.url(raw.name), "raw"), PROJECT)["id"],
        PROJECT,
    )
    assert imported["status"] == "success", imported["message"]
    image_id = imported["result"]["image_id"]
    s3 = local_stack.client("s3")
    s3.delete_object(Bucket=local_stack.buckets["ImagesBucket"], Key=f"images/{image_id}")

    # When it is exported
    task = create_task(local_stack, {"type": "export", "input": {"image_id": image_id}}, PROJECT)
    finished, _ = wait_for_task(local_stack, task["id"], PROJECT)

    # Then the export failed, and no file or part of one is left for it
    assert finished["status"] == "failure"
    assert finished["result"] is None
    exports = local_stack.buckets["ExportsBucket"]
    prefix = f"{PROJECT}/{task['id']}/"
    assert s3.list_objects_v2(Bucket=exports, Prefix=prefix).get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket=exports, Prefix=prefix).get("Uploads", []) == []
