"""The local stack for the cost and throughput sections: started on free ports, tiny images served."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from bench.common import WORK
from bench.image_server import ImageServer

PROJECT = "bench-project"
TINY_IMAGE = 1024 * 1024


@contextmanager
def local_stack(
    max_tasks: int = 64, aws_port: int | None = None, parameters: dict[str, str] | None = None
) -> Iterator[tuple[Any, ImageServer]]:
    from local.stack import DevStack

    with ImageServer() as server:
        stack = DevStack(
            api_port=0,
            aws_port=aws_port,  # 0: moto's server too, on a free port, as `make run` has it
            parameters={
                "MaxConcurrentTasks": str(max_tasks),
                "ImportAllowedPorts": f"80,443,{server.port}",
                **(parameters or {}),
            },
            state_dir=WORK / "local-state",
            ttl_sweep_seconds=60,
            execution_poll_seconds=0.2,
        )
        stack.start()
        try:
            yield stack, server
        finally:
            stack.stop()


def import_body(url: str) -> dict[str, Any]:
    return {
        "type": "import",
        "input": {
            "import_from": url,
            "import_from_format": "raw",
            "image_properties": {"name": "bench", "disk_format": "raw", "container_format": "bare"},
        },
    }


def headers(stack: Any) -> dict[str, str]:
    return {"X-Auth-Token": stack.token(PROJECT), "Accept": "application/json"}


def create(session: requests.Session, stack: Any, body: dict[str, Any], auth: dict[str, str]) -> str:
    response = session.post(f"{stack.api_url}/v2/tasks", json=body, headers=auth, timeout=60)
    if response.status_code != 201:
        raise RuntimeError(f"create: {response.status_code} {response.text}")
    return str(response.json()["id"])


def status(session: requests.Session, stack: Any, task_id: str, auth: dict[str, str]) -> dict[str, Any]:
    response = session.get(f"{stack.api_url}/v2/tasks/{task_id}", headers=auth, timeout=60)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def wait_final(stack: Any, task_id: str, timeout: float = 300) -> dict[str, Any]:
    auth = headers(stack)
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while time.monotonic() < deadline:
            task = status(session, stack, task_id, auth)
            if task["status"] in ("success", "failure"):
                return task
            time.sleep(0.2)
    raise TimeoutError(f"task {task_id} not final after {timeout} s")
