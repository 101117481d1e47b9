"""The images part of "everything a Glance user does works", with the real, unmodified clients.

python-glanceclient's CLI (image-download with its checksum verification, image-delete, image-tasks,
image-list filters) and openstacksdk (download_image) against the local stack; download URLs lead to
the local AWS endpoint (moto's server), never to a real AWS host.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.helpers import create_task, import_body, sdk_connection, wait_for_task
from tests.e2e.test_real_clients import glance, openstack
from tests.image_corpus import make_qcow2, require_qemu_img

PROJECT = "glance-images-project"


@pytest.fixture(scope="module")
def imported(local_stack: Any, image_server: Any) -> dict[str, Any]:
    """A public, tagged image with a property unique to this run, imported by an admin of PROJECT."""
    require_qemu_img()
    source = image_server.root / f"images-{uuid.uuid4().hex}.qcow2"
    shutil.copyfile(make_qcow2(image_server.root), source)
    marker = uuid.uuid4().hex[:12]
    body = import_body(image_server.url(source.name), "qcow2")
    body["input"]["image_properties"].update(
        {
            "name": f"clients-{marker}",
            "visibility": "public",
            "tags": [f"tag-{marker}", "e2e"],
            "os_distro": f"distro-{marker}",
            "min_disk": 2,
            "min_ram": 512,
        }
    )
    # Only admins make images public (Glance's publicize_image policy).
    task = create_task(local_stack, body, project=PROJECT, roles=("member", "admin"))
    finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT)
    assert finished["status"] == "success", finished["message"]
    return {
        "image_id": finished["result"]["image_id"],
        "task_id": task["id"],
        "marker": marker,
        "data": source.read_bytes(),
    }


def test_versions_list_glance_2_17_down_to_2_0(local_stack: Any) -> None:
    versions = requests.get(f"{local_stack.api_url}/versions", timeout=30).json()["versions"]

    assert [v["id"] for v in versions] == [f"v2.{minor}" for minor in range(17, -1, -1)]
    assert versions[0]["status"] == "CURRENT" and {v["status"] for v in versions[1:]} == {"SUPPORTED"}


def test_the_import_applies_glances_fields(local_stack: Any, imported: dict[str, Any]) -> None:
    shown = requests.get(
        f"{local_stack.api_url}/v2/images/{imported['image_id']}",
        headers=local_stack.headers(PROJECT),
        timeout=30,
    ).json()

    assert shown["visibility"] == "public" and shown["protected"] is False and shown["os_hidden"] is False
    assert shown["min_disk"] == 2 and shown["min_ram"] == 512
    assert sorted(shown["tags"]) == sorted([f"tag-{imported['marker']}", "e2e"])
    assert shown["os_distro"] == f"distro-{imported['marker']}"


@pytest.mark.artifact
def test_glance_image_download_verifies_and_writes_the_data(
    local_stack: Any, imported: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "downloaded.qcow2"

    result = glance(
        local_stack, local_stack.token(PROJECT), "image-download", "--file", str(target), imported["image_id"]
    )

    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == imported["data"]


def test_openstack_image_save_writes_the_data(
    local_stack: Any, imported: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "saved.qcow2"

    result = openstack(
        local_stack, local_stack.token(PROJECT), "image", "save", "--file", str(target), imported["image_id"]
    )

    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == imported["data"]


def test_another_project_downloads_a_public_image(
    local_stack: Any, imported: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "theirs.qcow2"

    result = glance(
        local_stack,
        local_stack.token("someone-else"),
        "image-download",
        "--file",
        str(target),
        imported["image_id"],
    )

    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == imported["data"]


def test_the_file_redirect_points_at_the_local_endpoint_and_serves_octet_stream(
    local_stack: Any, imported: dict[str, Any]
) -> None:
    redirect = requests.get(
        f"{local_stack.api_url}/v2/images/{imported['image_id']}/file",
        headers=local_stack.headers(PROJECT),
        allow_redirects=False,
        timeout=30,
    )
    data = requests.get(redirect.headers["Location"], timeout=30)

    assert redirect.status_code == 302
    assert redirect.headers["Location"].startswith(local_stack.aws_url)
    assert data.status_code == 200 and data.headers["Content-Type"] == "application/octet-stream"
    assert (
        hashlib.md5(data.content, usedforsecurity=False).hexdigest()
        == hashlib.md5(imported["data"], usedforsecurity=False).hexdigest()
    )


def test_glance_image_tasks_lists_the_import(local_stack: Any, imported: dict[str, Any]) -> None:
    result = glance(local_stack, local_stack.token(PROJECT), "--verbose", "image-tasks", imported["image_id"])

    assert result.returncode == 0, result.stderr
    assert "success" in result.stdout and imported["task_id"] in result.stdout


@pytest.mark.parametrize(
    "arguments",
    [
        ("--property-filter", "os_distro=distro-{marker}"),
        ("--tag", "tag-{marker}"),
        ("--visibility", "public", "--property-filter", "name=clients-{marker}"),
        ("--property-filter", "disk_format=qcow2", "--tag", "tag-{marker}"),
    ],
)
def test_glance_image_list_filters(
    local_stack: Any, imported: dict[str, Any], arguments: tuple[str, ...]
) -> None:
    args = [argument.format(marker=imported["marker"]) for argument in arguments]

    mine = glance(local_stack, local_stack.token(PROJECT), "image-list", *args)
    others = glance(local_stack, local_stack.token("someone-else"), "image-list", *args)
    unrelated = glance(
        local_stack,
        local_stack.token(PROJECT),
        "image-list",
        "--property-filter",
        "os_distro=nothing-like-it",
    )

    assert mine.returncode == 0, mine.stderr
    assert imported["image_id"] in mine.stdout
    assert imported["image_id"] in others.stdout  # public: listed for every project
    assert unrelated.returncode == 0 and imported["image_id"] not in unrelated.stdout


def test_openstacksdk_downloads_the_image_with_its_checksum(
    local_stack: Any, imported: dict[str, Any], tmp_path: Path
) -> None:
    conn = sdk_connection(local_stack, PROJECT)
    target = tmp_path / "sdk.qcow2"

    image = conn.image.get_image(imported["image_id"])
    conn.image.download_image(image, output=str(target))
    in_memory = conn.image.download_image(image)

    assert target.read_bytes() == imported["data"]
    assert in_memory.content == imported["data"]


def test_an_export_url_downloads_locally(local_stack: Any, imported: dict[str, Any]) -> None:
    task = create_task(
        local_stack, {"type": "export", "input": {"image_id": imported["image_id"]}}, project=PROJECT
    )
    finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT)
    assert finished["status"] == "success", finished["message"]

    data = requests.get(finished["result"]["url"], timeout=30)

    assert finished["result"]["url"].startswith(local_stack.aws_url)
    assert data.status_code == 200 and data.headers["Content-Type"] == "application/octet-stream"
    assert data.content == imported["data"]


def test_glance_and_openstacksdk_downloads_refuse_data_that_does_not_match(
    local_stack: Any, image_server: Any, tmp_path: Path
) -> None:
    import openstack

    require_qemu_img()
    source = image_server.root / f"tampered-{uuid.uuid4().hex}.qcow2"
    shutil.copyfile(make_qcow2(image_server.root), source)
    task = create_task(local_stack, import_body(image_server.url(source.name), "qcow2"), project=PROJECT)
    finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT)
    image_id = finished["result"]["image_id"]
    local_stack.client("s3").put_object(
        Bucket=local_stack.buckets["ImagesBucket"],
        Key=f"images/{image_id}",
        Body=b"not the image" * 100,
        ContentType="application/octet-stream",
    )

    result = glance(
        local_stack, local_stack.token(PROJECT), "image-download", "--file", str(tmp_path / "x"), image_id
    )
    conn = sdk_connection(local_stack, PROJECT)
    with pytest.raises(openstack.exceptions.SDKException, match="checksum mismatch") as sdk_refusal:
        conn.image.download_image(conn.image.get_image(image_id), output=str(tmp_path / "y"))

    assert result.returncode != 0
    assert "Corrupt image download" in result.stderr
    assert "sha512" in str(sdk_refusal.value)  # checked against os_hash_value, the image's own hash


def test_glance_image_delete_exits_0_and_protected_images_are_refused(
    local_stack: Any, image_server: Any
) -> None:
    require_qemu_img()
    source = image_server.root / f"delete-{uuid.uuid4().hex}.qcow2"
    shutil.copyfile(make_qcow2(image_server.root), source)
    ids = {}
    for protected in (False, True):
        body = import_body(image_server.url(source.name), "qcow2")
        body["input"]["image_properties"]["protected"] = protected
        task = create_task(local_stack, body, project=PROJECT)
        finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT)
        ids[protected] = finished["result"]["image_id"]
    token = local_stack.token(PROJECT)

    deleted = glance(local_stack, token, "image-delete", ids[False])
    refused = glance(local_stack, token, "image-delete", ids[True])
    gone = requests.get(
        f"{local_stack.api_url}/v2/images/{ids[False]}", headers=local_stack.headers(PROJECT), timeout=30
    )
    raw = requests.delete(
        f"{local_stack.api_url}/v2/images/{ids[True]}", headers=local_stack.headers(PROJECT), timeout=30
    )

    assert deleted.returncode == 0, deleted.stderr
    assert gone.status_code == 404
    assert refused.returncode != 0 and "not permitted to delete" in refused.stderr
    assert raw.status_code == 403 and json.loads(raw.text)["error"]["code"] == 403


def test_a_delete_answers_204_with_no_json_content_type(local_stack: Any, image_server: Any) -> None:
    require_qemu_img()
    source = image_server.root / f"raw-delete-{uuid.uuid4().hex}.qcow2"
    shutil.copyfile(make_qcow2(image_server.root), source)
    task = create_task(local_stack, import_body(image_server.url(source.name), "qcow2"), project=PROJECT)
    finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT)

    response = requests.delete(
        f"{local_stack.api_url}/v2/images/{finished['result']['image_id']}",
        headers=local_stack.headers(PROJECT),
        timeout=30,
    )

    assert response.status_code == 204 and response.content == b""
    assert not response.headers["Content-Type"].startswith("application/json")
