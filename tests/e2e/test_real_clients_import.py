"""Glance's interoperable import (web-download) with the real, unmodified clients: glance
image-create-via-import and openstacksdk's create_image(import_method="web-download"), importing from
the loopback image server."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
import uuid
from typing import Any

import pytest
import requests

from tests.e2e.helpers import sdk_connection
from tests.e2e.test_real_clients import glance, table_value
from tests.image_corpus import make_qcow2, require_qemu_img

PROJECT = "web-download-project"


def glance_create_via_web_download(
    stack: Any, token: str, url: str, name: str
) -> subprocess.CompletedProcess[str]:
    """`glance image-create-via-import --import-method web-download` of a qcow2 at `url`."""
    return glance(
        stack,
        token,
        "image-create-via-import",
        "--import-method",
        "web-download",
        "--uri",
        url,
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "--name",
        name,
        stdin_closed=True,
    )


def served_qcow2(image_server: Any) -> tuple[str, bytes]:
    require_qemu_img()
    source = image_server.root / f"web-download-{uuid.uuid4().hex}.qcow2"
    shutil.copyfile(make_qcow2(image_server.root), source)
    return image_server.url(source.name), source.read_bytes()


def wait_until_settled(local_stack: Any, image_id: str) -> dict[str, Any]:
    """The image once its import ended (active, or queued again); polls, no timing asserted."""
    headers = local_stack.headers(PROJECT)
    deadline = time.monotonic() + 120
    while True:
        image: dict[str, Any] = requests.get(
            f"{local_stack.api_url}/v2/images/{image_id}", headers=headers, timeout=30
        ).json()
        if image["status"] in ("active", "queued") or time.monotonic() > deadline:
            return image
        time.sleep(0.3)


@pytest.mark.artifact
def test_glance_cli_image_create_via_import_web_download(local_stack: Any, image_server: Any) -> None:
    url, data = served_qcow2(image_server)
    token = local_stack.token(PROJECT)
    name = f"cli-web-download-{uuid.uuid4().hex[:8]}"

    created = glance_create_via_web_download(local_stack, token, url, name)

    assert created.returncode == 0, created.stderr + created.stdout
    image_id = table_value(created.stdout, "id")
    image = wait_until_settled(local_stack, image_id)
    assert image["status"] == "active", image
    assert image["name"] == name and image["size"] == len(data)
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    # The image is active once registered; its task records success a step later.
    deadline = time.monotonic() + 30
    tasks = glance(local_stack, token, "image-tasks", image_id)
    while "success" not in tasks.stdout and time.monotonic() < deadline:
        time.sleep(0.2)
        tasks = glance(local_stack, token, "image-tasks", image_id)
    assert tasks.returncode == 0, tasks.stderr
    assert "success" in tasks.stdout
    info = glance(local_stack, token, "import-info")
    assert info.returncode == 0 and "import-methods" in info.stdout


def test_glance_cli_refuses_glance_direct_from_import_info(local_stack: Any, tmp_path: Any) -> None:
    token = local_stack.token(PROJECT)
    data = tmp_path / "disk.raw"
    data.write_bytes(b"\0" * 1024)

    created = glance(
        local_stack,
        token,
        "image-create-via-import",
        "--import-method",
        "glance-direct",
        "--file",
        str(data),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--name",
        "direct",
    )

    # The CLI reads /v2/info/import first and refuses the method itself (the API's own 400 names
    # the S3 upload path: tests/integration/functions/images_api/test_image_import_api.py).
    assert created.returncode != 0
    assert "Import method 'glance-direct' is not valid for this cloud" in created.stderr


def test_openstacksdk_create_image_with_web_download(local_stack: Any, image_server: Any) -> None:
    url, data = served_qcow2(image_server)
    conn = sdk_connection(local_stack, PROJECT)
    name = f"sdk-web-download-{uuid.uuid4().hex[:8]}"

    # This openstacksdk imports only with use_import=True (import_method alone uploads with PUT /file).
    image = conn.image.create_image(
        name=name,
        disk_format="qcow2",
        container_format="bare",
        use_import=True,
        import_method="web-download",
        uri=url,
    )

    settled = wait_until_settled(local_stack, image.id)
    assert settled["status"] == "active", settled
    assert settled["name"] == name and settled["size"] == len(data)
    assert conn.image.download_image(conn.image.get_image(image.id)).content == data
