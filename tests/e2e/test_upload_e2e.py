"""An upload to the uploads bucket, through the local AWS endpoint, becomes an import task."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from local.template import REGION
from tests.e2e.helpers import wait_for_task
from tests.image_corpus import file_digests, make_qcow2, require_qemu_img


def find_task(stack: Any, project: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = requests.get(f"{stack.api_url}/v2/tasks", headers=stack.headers(project), timeout=30).json()[
            "tasks"
        ]
        if tasks:
            return tasks[0]
        time.sleep(0.1)
    raise AssertionError(f"no task appeared for {project} within {timeout} s")


@pytest.mark.artifact
def test_an_uploaded_qcow2_is_imported_into_an_active_image_of_the_keys_project(
    local_stack: Any, tmp_path: Any
) -> None:
    require_qemu_img()
    image_file = make_qcow2(tmp_path)
    md5, sha512 = file_digests(image_file)
    bucket = local_stack.buckets["UploadsBucket"]
    key = "uploads/upload-project/my cirros.qcow2"

    local_stack.client("s3").put_object(
        Bucket=bucket,
        Key=key,
        Body=image_file.read_bytes(),
        Metadata={"name": "uploaded cirros", "os-distro": "cirros", "owner": "someone-else"},
    )
    task = find_task(local_stack, "upload-project")
    finished, _ = wait_for_task(local_stack, task["id"], project="upload-project")

    assert finished["status"] == "success", finished["message"]
    assert finished["owner"] == "upload-project"
    assert finished["input"]["import_from"] == f"s3://{bucket}/{key}"
    image_id = finished["result"]["image_id"]
    image = requests.get(
        f"{local_stack.api_url}/v2/images/{image_id}",
        headers=local_stack.headers("upload-project"),
        timeout=30,
    ).json()
    assert (
        image["status"] == "active" and image["disk_format"] == "qcow2" and image["owner"] == "upload-project"
    )
    assert image["name"] == "uploaded cirros" and image["os_distro"] == "cirros"
    assert image["checksum"] == md5 and image["os_hash_value"] == sha512
    remaining = local_stack.client("s3").list_objects_v2(Bucket=bucket, Prefix="uploads/upload-project/")
    assert remaining.get("KeyCount", 0) == 0, "the imported upload should have been removed"
    other = requests.get(
        f"{local_stack.api_url}/v2/tasks", headers=local_stack.headers("someone-else"), timeout=30
    ).json()
    assert other["tasks"] == []


def test_an_empty_upload_becomes_a_failed_task_and_the_object_is_kept(local_stack: Any) -> None:
    bucket = local_stack.buckets["UploadsBucket"]
    key = "uploads/empty-project/nothing.qcow2"

    local_stack.client("s3").put_object(Bucket=bucket, Key=key, Body=b"")
    task = find_task(local_stack, "empty-project")
    finished, _ = wait_for_task(local_stack, task["id"], project="empty-project")

    assert finished["status"] == "failure" and "empty" in finished["message"].lower()
    assert finished["error_code"] == "image_rejected"
    assert local_stack.client("s3").list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 1
    # Its end is announced like any other task's
    announced = [
        e for e in local_stack.stack.published_events("imagetasks") if e["detail"]["id"] == task["id"]
    ]
    assert [e["detail-type"] for e in announced] == ["Task Failed"]


def test_a_multipart_upload_announced_twice_becomes_one_task(local_stack: Any) -> None:
    # Given an image uploaded in parts (moto announces it twice: ObjectCreated:Put and
    # ObjectCreated:CompleteMultipartUpload)
    bucket = local_stack.buckets["UploadsBucket"]
    key = "uploads/multipart-project/disk.raw"
    s3 = local_stack.client("s3")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, size in ((1, 5 * 1024 * 1024), (2, 1024)):
        etag = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=b"\0" * size
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})

    # When both notifications have been handled and the import has finished
    task = find_task(local_stack, "multipart-project")
    local_stack.stack.hook.wait_for_notifications()
    finished, _ = wait_for_task(local_stack, task["id"], project="multipart-project")

    # Then there was one task, and it imported the upload
    tasks = requests.get(
        f"{local_stack.api_url}/v2/tasks", headers=local_stack.headers("multipart-project"), timeout=30
    ).json()["tasks"]
    assert [t["id"] for t in tasks] == [task["id"]]
    assert finished["status"] == "success", finished["message"]


def test_an_aws_cli_upload_past_the_multipart_threshold_becomes_one_task(
    local_stack: Any, tmp_path: Path
) -> None:
    # Given a 9 MiB raw image (the AWS CLI uploads anything over 8 MiB in parts) and the AWS CLI
    # configured as the README says: the local endpoint, dummy credentials, the stack's region
    project = "aws-cli-project"
    image_file = tmp_path / "disk.raw"
    image_file.write_bytes(bytes(range(256)) * (9 * 1024 * 4))
    md5, sha512 = file_digests(image_file)
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
    )
    target = f"s3://{local_stack.buckets['UploadsBucket']}/uploads/{project}/disk.raw"

    # When `aws s3 cp` uploads it and every notification of it has been handled
    copied = subprocess.run(
        [str(Path(sys.executable).with_name("aws")), "--endpoint-url", local_stack.aws_url, "s3", "cp",
         str(image_file), target],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    task = find_task(local_stack, project)
    local_stack.stack.hook.wait_for_notifications()
    finished, _ = wait_for_task(local_stack, task["id"], project=project)

    # Then there is one task, and its image is the file
    tasks = requests.get(
        f"{local_stack.api_url}/v2/tasks", headers=local_stack.headers(project), timeout=30
    ).json()["tasks"]
    assert [t["id"] for t in tasks] == [task["id"]]
    assert finished["status"] == "success", finished["message"]
    image = requests.get(
        f"{local_stack.api_url}/v2/images/{finished['result']['image_id']}",
        headers=local_stack.headers(project),
        timeout=30,
    ).json()
    assert image["size"] == image_file.stat().st_size == 9 * 1024 * 1024
    assert image["checksum"] == md5 and image["os_hash_value"] == sha512
