"""`make sam-invoke` (local/sam_invoke.py): an event file through SAM's own `sam local invoke`, the
built function in a container, with the variables a local stack generates for it.

The command runs as make runs it, in its own process (its own fresh stack, its own podman service,
one container that is gone after), so it does not share the session's `sam local start-lambda`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from local.sam_local import missing_prerequisites
from tests.build.conftest import require
from tests.support import EVENTS, ROOT

pytestmark = pytest.mark.containers


def test_an_event_file_runs_through_sam_local_invoke_against_a_local_stack() -> None:
    # Given the container tier, and an event that needs what only a stack has: a task its
    # placeholder stands for, the table holding it (a resource name SAM cannot resolve on its
    # own), an AWS endpoint the container reaches and the function's role to read it with
    reason = missing_prerequisites()
    require(reason is None, f"container tier not set up: {reason}")
    environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'common' / 'python'}{os.pathsep}{ROOT}"}

    # When the recipe runs it
    completed = subprocess.run(
        [sys.executable, "-m", "local.sam_invoke", str(EVENTS / "tasks_api_show.json")],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

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
