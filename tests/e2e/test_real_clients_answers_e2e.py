"""Answers the Glance clients take as they come, with the real, unmodified glance CLI against the
local stack: the hash filters find an image, several sort keys are refused with a message, the
metadata definitions say they are not offered, and `image-create --file` leaves no image behind."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.e2e.test_real_clients import glance

PROJECT = "glance-answers-project"


@pytest.fixture(scope="module")
def imported(local_stack: Any, image_server: Any) -> dict[str, Any]:
    """A raw image of data unique to this run, imported into PROJECT."""
    data = os.urandom(1024 * 1024)
    name = f"answers-{uuid.uuid4().hex}.raw"
    (image_server.root / name).write_bytes(data)
    body = import_body(image_server.url(name), "raw")
    body["input"]["image_properties"]["name"] = name
    task = create_task(local_stack, body, project=PROJECT)
    finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT)
    assert finished["status"] == "success", finished["message"]
    return {
        "image_id": finished["result"]["image_id"],
        "task_id": task["id"],
        "checksum": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "os_hash_value": hashlib.sha512(data).hexdigest(),
    }


def listed_ids(output: str) -> set[str]:
    """The ids in `glance image-list`'s table."""
    return {cells[1] for line in output.splitlines() if (cells := [c.strip() for c in line.split("|")])[1:2]}


def test_glance_image_list_finds_the_image_by_checksum_and_by_hash(
    local_stack: Any, imported: dict[str, Any]
) -> None:
    token = local_stack.token(PROJECT)

    by_md5 = glance(local_stack, token, "image-list", "--checksum", imported["checksum"])
    by_sha = glance(local_stack, token, "image-list", "--hash", imported["os_hash_value"])
    by_other = glance(local_stack, token, "image-list", "--checksum", "0" * 32)

    assert by_md5.returncode == 0, by_md5.stderr
    assert by_sha.returncode == 0, by_sha.stderr
    assert imported["image_id"] in listed_ids(by_md5.stdout)
    assert imported["image_id"] in listed_ids(by_sha.stdout)
    assert by_other.returncode == 0 and imported["image_id"] not in listed_ids(by_other.stdout)


def test_glance_image_list_with_two_sort_keys_says_what_is_supported(local_stack: Any) -> None:
    result = glance(
        local_stack, local_stack.token(PROJECT), "image-list", "--sort-key", "name", "--sort-key", "size"
    )

    assert result.returncode != 0
    assert "Sorting by several keys is not supported by this service" in result.stderr


def test_glance_md_commands_say_the_api_is_not_offered(local_stack: Any) -> None:
    result = glance(local_stack, local_stack.token(PROJECT), "md-namespace-list")
    direct = requests.get(
        f"{local_stack.api_url}/v2/metadefs/namespaces", headers=local_stack.headers(PROJECT), timeout=30
    )

    assert result.returncode != 0
    assert "not offered by this service" in result.stderr, result.stderr
    assert direct.status_code == 404
    assert "metadata definitions API" in direct.json()["error"]["message"]


def test_glance_image_create_with_a_file_leaves_no_image_and_says_how_to_upload(
    local_stack: Any, tmp_path: Path
) -> None:
    # Given a file to upload, under a name unique to this run
    disk = tmp_path / "disk.raw"
    disk.write_bytes(os.urandom(4096))
    name = f"from-file-{uuid.uuid4().hex}"
    token = local_stack.token(PROJECT)

    # When the glance CLI creates an image with it
    result = glance(
        local_stack,
        token,
        "image-create",
        "--name",
        name,
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--file",
        str(disk),
        stdin_closed=True,
    )

    # Then it fails saying the image is gone and how to upload instead
    assert result.returncode != 0
    assert "Image data cannot be uploaded through this API" in result.stderr, result.stderr
    assert "made for this upload was deleted" in result.stderr
    assert "/uploads/<project_id>/" in result.stderr
    # and no image of that name is left
    images = requests.get(
        f"{local_stack.api_url}/v2/images",
        params={"name": name},
        headers=local_stack.headers(PROJECT),
        timeout=30,
    ).json()["images"]
    assert images == []


def test_the_image_tasks_have_glances_deleted_keys(local_stack: Any, imported: dict[str, Any]) -> None:
    tasks = requests.get(
        f"{local_stack.api_url}/v2/images/{imported['image_id']}/tasks",
        headers=local_stack.headers(PROJECT),
        timeout=30,
    ).json()["tasks"]

    assert [task["id"] for task in tasks] == [imported["task_id"]]
    assert tasks[0]["deleted"] is False and tasks[0]["deleted_at"] is None
