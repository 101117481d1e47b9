"""`GET /v2/tasks/{id}?wait=N` over HTTP on the local stack, with a source held mid-fetch."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from tests.e2e.helpers import FINAL, create_task, import_body
from tests.image_corpus import make_raw

PROJECT = "long-poll-project"


def wait_for_leases(stack: Any, count: int, deadline: float) -> int:
    """The number of live long-poll leases of the project once it reaches `count` (or the deadline)."""
    dynamodb = stack.client("dynamodb")
    while True:
        now = time.time()
        rows = [
            dynamodb.get_item(
                TableName=stack.tables["TasksTable"], Key={"id": {"S": f"long-poll#{PROJECT}#{number}"}}
            ).get("Item")
            for number in range(10)
        ]
        live = sum(1 for row in rows if row is not None and int(row["lease_expires"]["N"]) >= now)
        if live >= count or time.monotonic() > deadline:
            return live
        time.sleep(0.2)


def show(stack: Any, task_id: str, wait: str) -> requests.Response:
    return requests.get(
        f"{stack.api_url}/v2/tasks/{task_id}",
        params={"wait": wait},
        headers=stack.headers(PROJECT),
        timeout=40,
    )


def test_a_client_follows_a_task_to_its_end_with_long_polls(local_stack: Any, image_server: Any) -> None:
    held = make_raw(image_server.root).rename(image_server.root / "long-poll-held.raw")
    requested, release = image_server.hold(held.name)
    try:
        task = create_task(local_stack, import_body(image_server.url(held.name), "raw"), project=PROJECT)
        assert requested.wait(60), "the import step never fetched its source"
        # While the source holds the fetch, nothing changes: a short wait answers the task as it is
        unchanged = show(local_stack, task["id"], "1")
        assert unchanged.status_code == 200, unchanged.text
        assert unchanged.json()["id"] == task["id"] and unchanged.json()["status"] == "processing"
    finally:
        release.set()
    # Each long poll answers a change (or the task as it is after 20 s); a few reach the end
    seen = [unchanged.json()["status"]]
    for _ in range(30):
        answer = show(local_stack, task["id"], "20")
        assert answer.status_code == 200, answer.text
        seen.append(answer.json()["status"])
        if seen[-1] in FINAL:
            break
    assert seen[-1] == "success", seen
    # A finished task is answered (at once) as it is; bad waits and unknown tasks are refused
    assert show(local_stack, task["id"], "20").json()["status"] == "success"
    refused = show(local_stack, task["id"], "21")
    assert refused.status_code == 400
    assert "wait must be a whole number of seconds from 1 to 20" in refused.json()["error"]["message"]
    assert show(local_stack, "00000000-0000-4000-8000-000000000000", "20").status_code == 404


def test_a_project_holds_at_most_ten_long_polls_at_once(local_stack: Any, image_server: Any) -> None:
    # Given a task whose source is held (it does not change while the polls wait)
    held = make_raw(image_server.root).rename(image_server.root / "long-poll-limit.raw")
    requested, release = image_server.hold(held.name)
    try:
        task = create_task(local_stack, import_body(image_server.url(held.name), "raw"), project=PROJECT)
        assert requested.wait(60)

        # When ten polls of the project are open (their leases seen in the table: however slowly a
        # loaded machine starts them), and two more arrive
        with ThreadPoolExecutor(max_workers=10) as pool:
            open_polls = [pool.submit(show, local_stack, task["id"], "20") for _ in range(10)]
            leases = wait_for_leases(local_stack, 10, deadline=time.monotonic() + 60)
            late = [show(local_stack, task["id"], "20") for _ in range(2)]
            answers = [poll.result() for poll in open_polls] + late
    finally:
        release.set()

    # Then the ten were served after their wait, and the two refused at once, saying when to retry
    assert leases == 10
    statuses = [answer.status_code for answer in answers]
    assert statuses == [200] * 10 + [429] * 2, statuses
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.headers["Retry-After"] == "2" and "long polls open" in refused.json()["error"]["message"]
