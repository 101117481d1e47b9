"""The client (client/, an OpenStackClient plugin) in the real `openstack` command against the local
stack: `image task create|watch|cancel`, and `show`/`list` with progress and error_code."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.e2e.test_real_clients import openstack, table_value
from tests.image_corpus import require_qemu_img

PROJECT = "osc-plugin-project"
MiB = 1024 * 1024


def a_raw_image(image_server: Any, name: str, size: int = 6 * MiB) -> str:
    (image_server.root / name).write_bytes(b"\0" * 512 + os.urandom(size - 512))
    return image_server.url(name)


def release_after_request(requested: threading.Event, release: threading.Event, seconds: float) -> None:
    """Lets a held source answer `seconds` after its request arrived (well within the stack's 40 s
    step timeout): meanwhile the task is running and its watcher long-polls."""
    if requested.wait(60):
        time.sleep(seconds)
    release.set()


def test_create_wait_follows_an_import_live_then_watch_and_show_report_it(
    local_stack: Any, image_server: Any
) -> None:
    token = local_stack.token(PROJECT)
    url = a_raw_image(image_server, "osc-watch.raw")
    requested, release = image_server.hold("osc-watch.raw")
    threading.Thread(target=release_after_request, args=(requested, release, 3), daemon=True).start()
    try:
        # When an import is created from options and followed (the source holds its answer a while)
        created = openstack(
            local_stack, token, "image", "task", "create", "--type", "import", "--import-from", url,
            "--import-from-format", "raw", "--name", "watched", "--property", "os_distro=debian",
            "--wait", "-f", "json",
        )  # fmt: skip
    finally:
        release.set()

    # Then the progress lines (stderr) saw it running, then its end; stdout is the finished task
    assert created.returncode == 0, created.stderr
    task = json.loads(created.stdout)
    lines = created.stderr.splitlines()
    states = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    assert states[0] in ("pending", "processing") or states[0].startswith("processing: fetch"), lines
    assert any(state.startswith("processing") for state in states), lines
    assert states[-1] == "success: fetch 6.0 MiB / 6.0 MiB (100%)", lines
    assert lines[-1] == f"Task {task['id']} succeeded: image {task['result']['image_id']}"
    assert task["progress"] == {
        "step": "fetch",
        "bytes_done": 6 * MiB,
        "bytes_total": 6 * MiB,
        "percent": 100,
    }
    assert task["input"]["image_properties"] == {
        "name": "watched", "disk_format": "raw", "container_format": "bare", "os_distro": "debian"
    }  # fmt: skip

    # And `image task watch` of the finished task says how it ended (exit 0), and `image task show`
    # (the plugin's, not OSC's) has the progress and the error code
    watched = openstack(local_stack, token, "image", "task", "watch", task["id"])
    shown = openstack(local_stack, token, "image", "task", "show", task["id"])
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.splitlines() == [
        "[0:00] success: fetch 6.0 MiB / 6.0 MiB (100%)",
        f"Task {task['id']} succeeded: image {task['result']['image_id']}",
    ]
    assert shown.returncode == 0, shown.stderr
    assert table_value(shown.stdout, "progress") == "fetch 6.0 MiB / 6.0 MiB (100%)"
    assert table_value(shown.stdout, "error_code") == "None"
    assert table_value(shown.stdout, "status") == "success"


def test_a_failing_import_ends_the_watch_with_exit_1_and_its_error_code_and_message(
    local_stack: Any, image_server: Any
) -> None:
    token = local_stack.token(PROJECT)
    missing = image_server.url("osc-not-there.raw")

    # When an import of a missing source is created and waited for, then watched again and listed
    created = openstack(
        local_stack, token, "image", "task", "create", "--type", "import", "--import-from", missing,
        "--import-from-format", "raw", "--wait", "-f", "json",
    )  # fmt: skip
    task = json.loads(created.stdout)
    watched = openstack(local_stack, token, "image", "task", "watch", task["id"])
    listed = openstack(local_stack, token, "image", "task", "list", "--status", "failure", "-f", "json")

    # Then each exits 1 and says the error code and the service's message
    failure = f"source_unavailable: The image source answered 404 Not Found: {missing}"
    assert created.returncode == 1, created.stderr
    assert task["status"] == "failure" and task["error_code"] == "source_unavailable"
    assert created.stderr.splitlines()[-1] == failure  # --wait draws on stderr, stdout is the task
    assert watched.returncode == 1, watched.stderr
    assert watched.stdout.splitlines()[-2:] == [f"Task {task['id']} failed", failure]
    assert listed.returncode == 0, listed.stderr
    rows = {row["ID"]: row for row in json.loads(listed.stdout)}
    assert rows[task["id"]]["Error Code"] == "source_unavailable"


def test_cancel_ends_a_running_task_and_a_second_cancel_says_it_already_ended(
    local_stack: Any, image_server: Any
) -> None:
    token = local_stack.token(PROJECT)
    url = a_raw_image(image_server, "osc-cancel.raw", size=MiB)
    requested, release = image_server.hold("osc-cancel.raw")
    try:
        task = create_task(local_stack, import_body(url, "raw"), project=PROJECT)
        assert requested.wait(60), "the import never fetched its source"

        cancelled = openstack(local_stack, token, "image", "task", "cancel", task["id"])
    finally:
        release.set()
    finished, _ = wait_for_task(local_stack, task["id"], project=PROJECT)
    again = openstack(local_stack, token, "image", "task", "cancel", task["id"])

    assert cancelled.returncode == 0, cancelled.stderr
    assert finished["status"] == "failure" and finished["error_code"] == "cancelled"
    assert again.returncode == 1
    assert f"Task {task['id']} is already failure" in again.stderr and "Traceback" not in again.stderr


def test_create_converts_and_exports_an_image_from_options_and_waits(
    local_stack: Any, image_server: Any
) -> None:
    require_qemu_img()
    token = local_stack.token(PROJECT)
    source = create_task(
        local_stack,
        import_body(a_raw_image(image_server, "osc-convert.raw", size=2 * MiB), "raw"),
        project=PROJECT,
    )
    image_id = wait_for_task(local_stack, source["id"], project=PROJECT)[0]["result"]["image_id"]

    converted = openstack(
        local_stack, token, "image", "task", "create", "--type", "convert", "--image", image_id,
        "--disk-format", "qcow2", "--name", "as-qcow2", "--wait", "-f", "json",
    )  # fmt: skip
    exported = openstack(
        local_stack,
        token,
        "image",
        "task",
        "create",
        "--type",
        "export",
        "--image",
        image_id,
        "--wait",
        "-f",
        "json",
    )

    assert converted.returncode == 0, converted.stderr
    convert = json.loads(converted.stdout)
    assert convert["status"] == "success" and convert["progress"]["step"] == "upload"
    assert convert["input"] == {"image_id": image_id, "disk_format": "qcow2", "name": "as-qcow2"}
    assert (
        converted.stderr.splitlines()[-1]
        == f"Task {convert['id']} succeeded: image {convert['result']['image_id']}"
    )
    assert exported.returncode == 0, exported.stderr
    export = json.loads(exported.stdout)
    assert export["status"] == "success" and export["result"]["size"] == 2 * MiB
    assert (
        exported.stderr.splitlines()[-1]
        == f"Download (until {export['result']['url_expires_at']}): {export['result']['url']}"
    )
