"""A compressed import end to end: a gzip'd qcow2 over HTTP becomes the active qcow2 image."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
import requests

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import file_digests, make_qcow2, require_qemu_img


@pytest.mark.artifact  # zstandard and the decompressor must ship in what `sam build` makes
def test_a_gzipped_qcow2_becomes_an_active_image_of_the_decompressed_data(
    local_stack: Any, image_server: Any
) -> None:
    require_qemu_img()
    # Given a qcow2 image served gzip'd
    image_file = make_qcow2(image_server.root)
    served = image_server.root / "cirros-gz.qcow2.gz"
    served.write_bytes(gzip.compress(image_file.read_bytes()))
    md5, sha512 = file_digests(image_file)
    # When it is imported as qcow2
    task = create_task(local_stack, import_body(image_server.url(served.name), "qcow2"))
    finished, _ = wait_for_task(local_stack, task["id"])
    # Then the image is active, with the decompressed image's checksums, size and data
    assert finished["status"] == "success", finished["message"]
    image_id = finished["result"]["image_id"]
    image = requests.get(
        f"{local_stack.api_url}/v2/images/{image_id}", headers=local_stack.headers(), timeout=30
    ).json()
    assert image["status"] == "active" and image["disk_format"] == "qcow2"
    assert image["checksum"] == md5 and image["os_hash_value"] == sha512
    assert image["size"] == image_file.stat().st_size and image["virtual_size"] == 1024 * 1024
    download = requests.get(
        f"{local_stack.api_url}/v2/images/{image_id}/file", headers=local_stack.headers(), timeout=60
    )
    assert download.status_code == 200 and download.content == image_file.read_bytes()
