"""`GET /v2/tasks/{id}?wait=N`: the task as soon as its status or progress changes, else after N seconds.

The handler's pause between two reads is driven by the tests (no test waits on a clock)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from imagetasks.domain.long_poll import MAX_WAIT_SECONDS
from tests.support import (
    api_event,
    call,
    create_task,
    fail_task,
    header,
    start_processing,
)

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def pauses(api: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The handler's pauses, recorded and skipped (a wait then runs its reads back to back)."""
    seen: list[float] = []
    monkeypatch.setattr(api, "pause", seen.append)
    return seen


def show(api: Any, task_id: str, wait: str, project: str = "project-a") -> dict[str, Any]:
    return call(api, api_event("GET", f"/v2/tasks/{task_id}", query={"wait": wait}, project=project))


def test_a_wait_answers_as_soon_as_another_thread_changes_the_task(api: Any, monkeypatch: Any) -> None:
    # Given a pending task, and another thread that starts it once the handler polls
    task = create_task(api)
    polling, changed = threading.Event(), threading.Event()

    def pause(seconds: float) -> None:
        polling.set()
        changed.wait(30)

    def start_the_task() -> None:
        polling.wait(30)
        table = api.tasks_table()
        start_processing(table, table.get(task["id"]))
        changed.set()

    monkeypatch.setattr(api, "pause", pause)
    worker = threading.Thread(target=start_the_task)
    worker.start()
    # When the client waits up to 20 s
    response = show(api, task["id"], "20")
    worker.join(30)
    # Then the answer is the changed task
    assert response["statusCode"] == 200, response["body"]
    assert response["json"]["id"] == task["id"]
    assert response["json"]["status"] == "processing"


def test_a_progress_change_ends_the_wait_too(api: Any, monkeypatch: Any) -> None:
    task = create_task(api)
    table = api.tasks_table()
    start_processing(table, table.get(task["id"]))
    progress = {"step": "fetch", "bytes_done": 5, "bytes_total": 10, "percent": 50}
    writes = iter([lambda: table.record_progress(task["id"], progress)])

    def pause(seconds: float) -> None:
        next(writes, lambda: None)()

    monkeypatch.setattr(api, "pause", pause)
    response = show(api, task["id"], "20")

    assert response["json"]["status"] == "processing"
    assert response["json"]["progress"] == progress


def test_an_unchanged_task_is_answered_as_it_is_when_the_wait_is_over(api: Any, pauses: list[float]) -> None:
    task = create_task(api)

    response = show(api, task["id"], "1")

    assert response["statusCode"] == 200
    assert response["json"]["id"] == task["id"] and response["json"]["status"] == "pending"
    assert pauses and all(0 < pause <= 0.5 for pause in pauses)


def test_a_finished_task_is_answered_at_once(api: Any, pauses: list[float]) -> None:
    task = create_task(api)
    fail_task(api.tasks_table(), task["id"], "gave up")

    response = show(api, task["id"], "20")

    assert response["json"]["status"] == "failure" and response["json"]["message"] == "gave up"
    assert pauses == []


def test_a_task_ending_during_the_wait_is_answered_final(api: Any, monkeypatch: Any) -> None:
    task = create_task(api)
    table = api.tasks_table()
    monkeypatch.setattr(api, "pause", lambda seconds: fail_task(table, task["id"], "gave up"))

    response = show(api, task["id"], "20")

    assert response["json"]["status"] == "failure"


@pytest.mark.parametrize("wait", ["0", str(MAX_WAIT_SECONDS + 1), "100", "-1", "1.5", "abc", "", " 5", "1e1"])
def test_a_wait_that_is_not_1_to_20_seconds_is_a_400(api: Any, pauses: list[float], wait: str) -> None:
    task = create_task(api)

    response = show(api, task["id"], wait)

    assert response["statusCode"] == 400
    assert "wait must be a whole number of seconds from 1 to 20" in response["json"]["error"]["message"]
    assert pauses == []


def test_an_unknown_task_is_404_without_waiting(api: Any, pauses: list[float]) -> None:
    response = show(api, UNKNOWN, "20")
    assert response["statusCode"] == 404
    assert pauses == []


def test_another_projects_task_is_404_without_waiting(api: Any, pauses: list[float]) -> None:
    task = create_task(api, project="project-b")
    response = show(api, task["id"], "20")
    assert response["statusCode"] == 404
    assert pauses == []


def leases(api: Any) -> Any:
    return api.long_poll_leases()


def test_a_project_at_its_long_poll_limit_gets_a_429_with_retry_after_and_others_do_not(
    api: Any, pauses: list[float]
) -> None:
    # Given a task, and its project holding as many long polls as the deployment allows (10)
    task = create_task(api)
    held = [leases(api).acquire("project-a", time.time(), 20) for _ in range(leases(api).limit)]
    assert None not in held and leases(api).acquire("project-a", time.time(), 20) is None

    # When one more poll of that project arrives, and one of another project
    refused = show(api, task["id"], "5")
    admin = call(
        api, api_event("GET", f"/v2/tasks/{task['id']}", query={"wait": "1"}, project="ops", roles="admin")
    )

    # Then the first is refused at once, saying when to try again; the other waits as usual
    assert refused["statusCode"] == 429, refused["body"]
    assert header(refused, "Retry-After") == "2"
    assert "10 long polls open" in refused["json"]["error"]["message"]
    assert admin["statusCode"] == 200 and pauses  # (its own project's leases)

    # And once one poll of the project ends, the next is served
    leases(api).release(held[0])
    assert show(api, task["id"], "1")["statusCode"] == 200


def test_a_poll_gives_its_lease_back_when_it_answers(api: Any, pauses: list[float]) -> None:
    task = create_task(api)

    assert show(api, task["id"], "2")["statusCode"] == 200
    assert show(api, UNKNOWN, "2")["statusCode"] == 404  # an error answer gives it back too

    assert leases(api).held("project-a", time.time()) == 0


def test_the_lease_of_a_poll_whose_function_died_expires_after_its_wait(api: Any) -> None:
    # Given a project whose 10 leases were taken by polls that never gave them back
    start = time.time()
    for _ in range(leases(api).limit):
        assert leases(api).acquire("project-a", start, 20) is not None

    # Then a poll is refused while they run, and served once their wait is over
    assert leases(api).acquire("project-a", start + 5, 20) is None
    assert leases(api).acquire("project-a", start + 25, 20) is not None
