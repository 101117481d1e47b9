"""`make sam-invoke` (`python -m local.invoke --sam`): an event file through SAM's own `sam local
invoke`, the built function in a container, with the variables a local stack generates for it.

The command runs as make runs it, in its own process (its own podman service, one container that is
gone after), so it does not share the session's `sam local start-lambda`: on a fresh stack of its
own, or (`--running`) against a `make run ARGS=--containers` going on in another process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.sam_local import missing_prerequisites
from local.tokens import mint_local_token
from tests.build.conftest import require
from tests.support import EVENTS, ROOT, module_environment, run_module

pytestmark = pytest.mark.containers


def sam_invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("local.invoke", "--sam", *args, timeout=600)


def test_an_event_file_runs_through_sam_local_invoke_against_a_local_stack() -> None:
    # Given the container tier, and an event that needs what only a stack has: a task its
    # placeholder stands for, the table holding it (a resource name SAM cannot resolve on its
    # own), an AWS endpoint the container reaches and the function's role to read it with
    reason = missing_prerequisites()
    require(reason is None, f"container tier not set up: {reason}")

    # When the recipe runs it
    completed = sam_invoke(str(EVENTS / "tasks_api_show.json"))

    # Then SAM's own invoke ran the built tasks API in a container, and it answered with the task
    # the stack made for the event: found in the stack's table, read with the function's role
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert " local invoke " in completed.stderr and "TasksApiFunction" in completed.stderr
    response = json.loads(completed.stdout)
    assert response["statusCode"] == 200, response
    task = json.loads(response["body"])
    assert task["status"] == "processing"
    assert task["type"] == "import" and task["owner"] == "project-a"
    assert f"/v2/tasks/{task['id']}" in task["self"]


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`make run ARGS=--containers` in a process of its own, with a state dir of its own: (API URL, state)."""
    tmp_path = tmp_path_factory.mktemp("running-stack")
    reason = missing_prerequisites()
    require(reason is None, f"container tier not set up: {reason}")
    command = [sys.executable, "-m", "local", "--containers", "--api-port", "0", "--aws-port", "0"]
    process = subprocess.Popen(
        [*command, "--state-dir", str(tmp_path)],
        cwd=ROOT,
        env=module_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        api_url = ""
        for line in process.stdout:  # the banner's "  API:          http://127.0.0.1:<port>"
            if line.strip().startswith("API:"):
                api_url = line.split()[-1]
                break
        assert api_url, "the stack ended before its banner"
        yield api_url, tmp_path
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)


def test_with_running_the_call_lands_in_the_stack_going_on(running_stack: tuple[str, Path]) -> None:
    # Given a `make run ARGS=--containers` going on
    api_url, state = running_stack

    # When the recipe runs an image's creation against it
    completed = sam_invoke("--running", "--state-dir", str(state), str(EVENTS / "images_api_create.json"))

    # Then the built images API answered from its container, and the image is in that stack
    assert completed.returncode == 0, completed.stderr[-4000:]
    response = json.loads(completed.stdout)
    assert response["statusCode"] == 201, response
    created = json.loads(response["body"])
    key = (state / "token.key").read_text(encoding="utf-8").strip()
    token = mint_local_token(key, "project-a", "project-a-user", ["member"])  # the event's project
    request = urllib.request.Request(f"{api_url}/v2/images/{created['id']}", headers={"X-Auth-Token": token})
    with urllib.request.urlopen(request, timeout=60) as answer:
        shown = json.loads(answer.read())
    assert shown["status"] == "queued" and shown["name"] == created["name"]


def test_with_running_an_event_with_placeholders_is_refused_by_name(running_stack: tuple[str, Path]) -> None:
    _, state = running_stack

    completed = sam_invoke("--running", "--state-dir", str(state), str(EVENTS / "images_api_show.json"))

    assert completed.returncode == 2
    assert "replace-with-an-image-id" in completed.stderr and "fresh stack" in completed.stderr
