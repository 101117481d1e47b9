"""`Idempotency-Key` on POST /v2/tasks over HTTP on the local stack (the API's role enforced)."""

from __future__ import annotations

import uuid
from typing import Any

import requests

from tests.e2e.helpers import import_body, wait_for_task
from tests.image_corpus import make_raw

PROJECT = "idempotency-project"


def post(stack: Any, body: dict[str, Any], key: str, project: str = PROJECT) -> requests.Response:
    headers = {**stack.headers(project), "Idempotency-Key": key}
    return requests.post(f"{stack.api_url}/v2/tasks", json=body, headers=headers, timeout=30)


def test_a_retried_create_answers_the_first_task_and_a_reused_key_is_refused(
    local_stack: Any, image_server: Any
) -> None:
    source = make_raw(image_server.root).rename(image_server.root / "idempotent.raw")
    body = import_body(image_server.url(source.name), "raw")
    key = f"e2e-{uuid.uuid4()}"

    first = post(local_stack, body, key)
    again = post(local_stack, body, key)
    other_body = post(local_stack, {**body, "input": {**body["input"], "checksum": "0" * 32}}, key)
    other_project = post(local_stack, body, key, project="idempotency-other")

    assert first.status_code == 201, first.text
    assert again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert other_body.status_code == 422
    assert other_body.json()["error"]["message"] == (
        "This Idempotency-Key was used with a different request body; use a new key for a new task"
    )
    assert other_project.status_code == 201 and other_project.json()["id"] != first.json()["id"]
    bad_key = post(local_stack, body, "x" * 256)
    assert bad_key.status_code == 400
    # One task for the two requests: the project lists it once, and it runs to the end once
    listed = requests.get(
        f"{local_stack.api_url}/v2/tasks", headers=local_stack.headers(PROJECT), timeout=30
    ).json()["tasks"]
    assert [task["id"] for task in listed if task["id"] == first.json()["id"]] == [first.json()["id"]]
    assert len(listed) == 1
    finished, _ = wait_for_task(local_stack, first.json()["id"], project=PROJECT)
    assert finished["status"] == "success", finished
