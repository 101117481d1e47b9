"""The real clients, unchanged, against the local stack: python-glanceclient's CLI and openstacksdk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import create_task, import_body, sdk_connection, wait_for_task
from tests.image_corpus import make_qcow2, require_qemu_img

GLANCE = str(Path(sys.executable).with_name("glance"))
OPENSTACK = str(Path(sys.executable).with_name("openstack"))


def client_cli(*command: str, stdin_closed: bool = False) -> subprocess.CompletedProcess[str]:
    """A client's CLI as a user runs it, without any OS_* settings of this machine's environment;
    `stdin_closed`: as at a terminal with `<&-` (the glance CLI reads a piped stdin as image data,
    which web-download refuses)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OS_")}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
        preexec_fn=(lambda: os.close(0)) if stdin_closed else None,
    )


def glance(
    stack: Any, token: str, *args: str, stdin_closed: bool = False
) -> subprocess.CompletedProcess[str]:
    return client_cli(
        GLANCE,
        "--os-image-api-version",
        "2",
        "--os-image-url",
        stack.api_url,
        "--os-auth-token",
        token,
        *args,
        stdin_closed=stdin_closed,
    )


def openstack(stack: Any, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The unified `openstack` CLI with a token, and the image API's versioned endpoint (as for
    openstacksdk) as every service's."""
    endpoint = f"{stack.api_url}/v2"
    return client_cli(
        OPENSTACK, "--os-auth-type", "admin_token", "--os-endpoint", endpoint, "--os-token", token, *args
    )


def table_value(output: str, field: str) -> str:
    """A field's value from the CLI's `| Property | Value |` table."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] == field:
            return cells[1]
    raise AssertionError(f"{field} not in:\n{output}")


@pytest.mark.artifact
def test_glance_cli_creates_lists_and_shows_a_task_and_shows_its_image(
    local_stack: Any, image_server: Any
) -> None:
    require_qemu_img()
    token = local_stack.token("cli-project")
    image_file = make_qcow2(image_server.root)
    task_input = import_body(image_server.url(image_file.name), "qcow2")["input"]

    created = glance(local_stack, token, "task-create", "--type", "import", "--input", json.dumps(task_input))
    assert created.returncode == 0, created.stderr
    task_id = table_value(created.stdout, "id")
    assert table_value(created.stdout, "status") == "pending"

    finished, _ = wait_for_task(local_stack, task_id, project="cli-project")
    listed = glance(local_stack, token, "task-list")
    shown = glance(local_stack, token, "task-show", task_id)
    image = glance(local_stack, token, "image-show", finished["result"]["image_id"])
    images = glance(local_stack, token, "image-list")

    assert listed.returncode == 0, listed.stderr
    assert task_id in listed.stdout and "success" in listed.stdout
    assert shown.returncode == 0, shown.stderr
    assert table_value(shown.stdout, "status") == "success"
    assert image.returncode == 0, image.stderr
    assert (
        table_value(image.stdout, "status") == "active"
        and table_value(image.stdout, "disk_format") == "qcow2"
    )
    assert finished["result"]["image_id"] in images.stdout


def test_glance_cli_reports_a_bad_request_and_a_missing_task_readably(local_stack: Any) -> None:
    token = local_stack.token("cli-project")

    bad = glance(
        local_stack,
        token,
        "task-create",
        "--type",
        "import",
        "--input",
        json.dumps({"import_from": "file:///etc/passwd"}),
    )
    missing = glance(local_stack, token, "task-show", "3f0c3c7e-9a47-4d55-8f55-5d2f0a2b6d11")
    unauthenticated = glance(local_stack, "not-a-token", "task-list")

    assert bad.returncode != 0 and "File based imports are not allowed" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert missing.returncode != 0 and "3f0c3c7e-9a47-4d55-8f55-5d2f0a2b6d11" in missing.stderr
    assert unauthenticated.returncode != 0 and "Traceback" not in unauthenticated.stderr


@pytest.fixture
def sdk(local_stack: Any) -> Any:
    return sdk_connection(local_stack, "sdk-project")


def test_openstacksdk_creates_pages_gets_and_waits_for_tasks(
    sdk: Any, local_stack: Any, image_server: Any
) -> None:
    require_qemu_img()
    image_file = make_qcow2(image_server.root)
    body = import_body(image_server.url(image_file.name), "qcow2")
    created = [sdk.image.create_task(type="import", input=body["input"]) for _ in range(3)]

    finished = sdk.image.wait_for_task(
        created[0], status="success", failures=["failure"], wait=90, interval=0.2
    )
    paged = list(sdk.image.tasks(limit=2))
    fetched = sdk.image.get_task(created[1].id)

    assert finished.status == "success" and finished.result["image_id"]
    assert {task.id for task in created} <= {task.id for task in paged}
    assert len(paged) == 3
    assert fetched.id == created[1].id and fetched.type == "import"
    for task in created[1:]:
        wait_for_task(local_stack, task.id, project="sdk-project")


def test_openstacksdk_shows_the_image_a_task_made(sdk: Any, local_stack: Any, image_server: Any) -> None:
    require_qemu_img()
    image_file = make_qcow2(image_server.root)
    task = create_task(
        local_stack, import_body(image_server.url(image_file.name), "qcow2"), project="sdk-project"
    )
    finished, _ = wait_for_task(local_stack, task["id"], project="sdk-project")

    image = sdk.image.get_image(finished["result"]["image_id"])

    assert image.status == "active" and image.disk_format == "qcow2" and image.owner == "sdk-project"
