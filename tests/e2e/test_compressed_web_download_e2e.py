"""Compressed sources through Glance's interoperable import with the real clients: glance
image-create-via-import --import-method web-download, and openstacksdk create_image(use_import=True,
import_method="web-download"), from a loopback URL serving a compressed qcow2. The image ends active
with the checksums and size of the decompressed image."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.e2e.test_real_clients import table_value
from tests.e2e.test_real_clients_import import PROJECT, glance_create_via_web_download, wait_until_settled
from tests.image_corpus import file_digests, make_qcow2, require_qemu_img
from tests.integration.services.test_compressed_sources import FORMATS, compressed_copy


def served_compressed_qcow2(image_server: Any, compression: str) -> tuple[str, Any]:
    """A small qcow2 served compressed from the loopback image server: its URL and the plain file."""
    require_qemu_img()
    directory = image_server.root / f"compressed-{uuid.uuid4().hex}"
    directory.mkdir()
    image_file = make_qcow2(directory)
    served = compressed_copy(image_file, compression).relative_to(image_server.root)
    return image_server.url(served.as_posix()), image_file


def assert_the_decompressed_image(stack: Any, image_id: str, image_file: Any) -> None:
    image = wait_until_settled(stack, image_id)
    md5, sha512 = file_digests(image_file)
    assert image["status"] == "active", image
    assert (image["checksum"], image["os_hash_value"]) == (md5, sha512)
    assert image["size"] == image_file.stat().st_size and image["disk_format"] == "qcow2"
    download = requests.get(
        f"{stack.api_url}/v2/images/{image_id}/file", headers=stack.headers(PROJECT), timeout=60
    )
    assert download.status_code == 200 and download.content == image_file.read_bytes()


# On the built artifact too for zstd: zstandard is the one decompressor that is not Python's own and
# must ship in what `sam build` makes (gzip, xz and bzip2 come with the runtime).
@pytest.mark.parametrize(
    "compression",
    [pytest.param(name, marks=pytest.mark.artifact) if name == "zstd" else name for name in FORMATS],
)
def test_glance_cli_web_download_of_a_compressed_qcow2(
    local_stack: Any, image_server: Any, compression: str
) -> None:
    # Given a qcow2 served compressed with this compression
    url, image_file = served_compressed_qcow2(image_server, compression)
    # When the CLI imports it with web-download
    token = local_stack.token(PROJECT)
    created = glance_create_via_web_download(local_stack, token, url, f"cli-{compression}")
    # Then the image is the decompressed qcow2
    assert created.returncode == 0, created.stderr + created.stdout
    assert_the_decompressed_image(local_stack, table_value(created.stdout, "id"), image_file)


def test_openstacksdk_web_download_of_a_compressed_qcow2(local_stack: Any, image_server: Any) -> None:
    import openstack

    url, image_file = served_compressed_qcow2(image_server, "zstd")
    conn = openstack.connection.Connection(
        auth_type="admin_token",
        auth={"endpoint": f"{local_stack.api_url}/v2", "token": local_stack.token(PROJECT)},
        image_api_version="2",
    )

    image = conn.image.create_image(
        name="sdk-zstd",
        disk_format="qcow2",
        container_format="bare",
        use_import=True,
        import_method="web-download",
        uri=url,
    )

    assert_the_decompressed_image(local_stack, image.id, image_file)
