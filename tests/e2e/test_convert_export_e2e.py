"""Convert and export end to end: import a qcow2, convert it to raw, export the raw as vmdk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from imagetasks.adapters.qemu import QemuImg
from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.e2e.test_real_clients import glance, table_value
from tests.image_corpus import file_digests, make_qcow2

pytestmark = pytest.mark.qemu_img  # skipped where qemu-img is not installed


def succeeded(stack: Any, body: dict[str, Any], project: str = "demo-project") -> dict[str, Any]:
    task = create_task(stack, body, project)
    finished, statuses = wait_for_task(stack, task["id"], project)
    assert finished["status"] == "success", finished["message"]
    assert set(statuses) <= {"pending", "processing", "success"}
    return finished


def download(stack: Any, bucket: str, key: str, path: Path) -> Path:
    path.write_bytes(stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    return path


@pytest.mark.artifact
def test_import_a_qcow2_convert_it_to_raw_and_export_the_raw_as_vmdk(
    local_stack: Any, image_server: Any, tmp_path: Path
) -> None:
    qcow2 = make_qcow2(image_server.root)
    disk = image_server.root / "qcow2-source.raw"  # the disk inside the qcow2
    imported = succeeded(local_stack, import_body(image_server.url(qcow2.name), "qcow2"))
    qcow2_id = imported["result"]["image_id"]

    converted = succeeded(
        local_stack, {"type": "convert", "input": {"image_id": qcow2_id, "disk_format": "raw"}}
    )
    raw_id = converted["result"]["image_id"]
    exported = succeeded(
        local_stack, {"type": "export", "input": {"image_id": raw_id, "disk_format": "vmdk"}}
    )

    # The converted image: a new raw image holding the same disk, with its own hashes.
    raw_image = requests.get(
        f"{local_stack.api_url}/v2/images/{raw_id}", headers=local_stack.headers(), timeout=30
    ).json()
    raw = download(local_stack, local_stack.buckets["ImagesBucket"], f"images/{raw_id}", tmp_path / "c.raw")
    assert raw_id != qcow2_id and raw_image["disk_format"] == "raw" and raw_image["status"] == "active"
    assert QemuImg().info(raw)["format"] == "raw"
    assert file_digests(raw) == file_digests(disk) == (raw_image["checksum"], raw_image["os_hash_value"])
    # The export: a vmdk of the same disk in the exports bucket, with a download URL.
    result = exported["result"]
    assert result["bucket"] == local_stack.buckets["ExportsBucket"]
    assert result["key"] == f"demo-project/{exported['id']}/{raw_id}.vmdk"
    vmdk = download(local_stack, result["bucket"], result["key"], tmp_path / "e.vmdk")
    assert QemuImg().info(vmdk)["format"] == "vmdk"
    assert (result["checksum"], result["os_hash_value"]) == file_digests(vmdk)
    assert result["size"] == vmdk.stat().st_size and result["url"].startswith("http")
    back = tmp_path / "back.raw"
    QemuImg().convert(vmdk, "vmdk", back, "raw", 60)
    assert file_digests(back) == file_digests(disk)
    # Both tasks are listed on the image they worked on; the source image is untouched.
    tasks_of_raw = requests.get(
        f"{local_stack.api_url}/v2/images/{raw_id}/tasks", headers=local_stack.headers(), timeout=30
    ).json()["tasks"]
    assert {converted["id"], exported["id"]} <= {t["id"] for t in tasks_of_raw}
    source = requests.get(
        f"{local_stack.api_url}/v2/images/{qcow2_id}", headers=local_stack.headers(), timeout=30
    ).json()
    assert source["disk_format"] == "qcow2" and source["checksum"] == file_digests(qcow2)[0]


def test_a_convert_of_someone_elses_image_is_400_over_http(local_stack: Any, image_server: Any) -> None:
    qcow2 = make_qcow2(image_server.root)
    imported = succeeded(
        local_stack, import_body(image_server.url(qcow2.name), "qcow2"), project="owner-project"
    )
    image_id = imported["result"]["image_id"]

    response = requests.post(
        f"{local_stack.api_url}/v2/tasks",
        json={"type": "convert", "input": {"image_id": image_id, "disk_format": "raw"}},
        headers=local_stack.headers("other-project"),
        timeout=30,
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"] == f"No image found with ID {image_id}"


def test_glance_cli_creates_a_convert_task(local_stack: Any, image_server: Any) -> None:
    token = local_stack.token("cli-convert")
    qcow2 = make_qcow2(image_server.root)
    imported = succeeded(
        local_stack, import_body(image_server.url(qcow2.name), "qcow2"), project="cli-convert"
    )
    task_input = {"image_id": imported["result"]["image_id"], "disk_format": "vhdx"}

    created = glance(
        local_stack, token, "task-create", "--type", "convert", "--input", json.dumps(task_input)
    )

    assert created.returncode == 0, created.stderr
    assert table_value(created.stdout, "type") == "convert"
    task_id = table_value(created.stdout, "id")
    finished, _ = wait_for_task(local_stack, task_id, project="cli-convert")
    assert finished["status"] == "success", finished["message"]
    shown = glance(local_stack, token, "image-show", finished["result"]["image_id"])
    assert shown.returncode == 0, shown.stderr
    assert table_value(shown.stdout, "disk_format") == "vhdx"
