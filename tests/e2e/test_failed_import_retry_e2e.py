"""A failed web-download import gives its image back before the failure shows (issue #23): the
moment a client sees the task fail, the image is `queued` again and a retried import is accepted."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from tests.e2e.conftest import QuietHandler
from tests.image_corpus import make_qcow2_backing_file, require_qemu_img

PROJECT = "retry-project"


def failing_source(kind: str, image_server: Any) -> str:
    name = f"{kind}-{uuid.uuid4().hex}"
    if kind == "backing-file":
        require_qemu_img()
        make_qcow2_backing_file(image_server.root).rename(image_server.root / name)
    elif kind == "wrong-format":
        (image_server.root / name).write_bytes(b"<html>not a disk</html>" * 100)
    elif kind == "refused-redirect":  # to a port the import filter refuses
        QuietHandler.redirects[name] = "http://127.0.0.1:1/disk.qcow2"
    # "source-missing": nothing there, 404
    return str(image_server.url(name))


@pytest.mark.parametrize("kind", ["backing-file", "wrong-format", "refused-redirect", "source-missing"])
def test_the_image_is_queued_again_when_the_failure_shows_and_a_retry_is_accepted(
    local_stack: Any, image_server: Any, kind: str
) -> None:
    api, headers = local_stack.api_url, local_stack.headers(PROJECT)
    # Given a queued image and a web-download import of it that will fail
    body = {"name": kind, "disk_format": "qcow2", "container_format": "bare"}
    image = requests.post(f"{api}/v2/images", json=body, headers=headers, timeout=30).json()
    method = {"method": {"name": "web-download", "uri": failing_source(kind, image_server)}}
    started = requests.post(f"{api}/v2/images/{image['id']}/import", json=method, headers=headers, timeout=30)
    assert started.status_code == 202, started.text

    # When a client sees its task fail
    deadline = time.monotonic() + 90
    while True:
        tasks = requests.get(f"{api}/v2/images/{image['id']}/tasks", headers=headers, timeout=30).json()
        if tasks["tasks"] and tasks["tasks"][0]["status"] == "failure":
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.05)

    # Then, at once, the image is queued with Glance's mark, and an import retried now is accepted
    shown = requests.get(f"{api}/v2/images/{image['id']}", headers=headers, timeout=30).json()
    retry = requests.post(f"{api}/v2/images/{image['id']}/import", json=method, headers=headers, timeout=30)
    assert shown["status"] == "queued" and shown["os_glance_failed_import"] == "default", shown
    assert retry.status_code == 202, retry.text
