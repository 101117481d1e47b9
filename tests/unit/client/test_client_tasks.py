"""The client's calls on /v2/tasks, against an in-memory tasks API: what is sent, what errors become."""

from __future__ import annotations

import pytest
from imagetasks_client.tasks import (
    ServiceUnavailable,
    TaskConflict,
    TaskNotFound,
    TasksClient,
    TasksError,
)

from tests.client_support import OTHER_ID, TASK_ID, FakeTasksApi, MiB, error, progress, task_json


def test_get_reads_progress_and_error_code_and_keeps_every_field() -> None:
    # Given a failed task with its last progress
    api = FakeTasksApi(
        lives={
            TASK_ID: [
                task_json(
                    status="failure",
                    progress=progress("fetch", 3 * MiB, None),
                    error_code="source_unavailable",
                    message="The image source answered 404 Not Found: http://x/disk",
                    user_id="u1",
                )
            ]
        }
    )

    # When the client gets it
    task = TasksClient(api).get(TASK_ID)

    # Then the extras are read, the unknown total stays unknown, and nothing is dropped
    assert task.is_final and task.error_code == "source_unavailable"
    assert task.progress is not None
    assert (task.progress.step, task.progress.bytes_done, task.progress.bytes_total) == (
        "fetch",
        3 * MiB,
        None,
    )
    assert task.progress.percent is None
    assert task.raw["user_id"] == "u1"
    assert api.requests == [("GET", f"/tasks/{TASK_ID}", {}, None)]


def test_a_long_poll_sends_wait() -> None:
    api = FakeTasksApi(lives={TASK_ID: [task_json(), task_json(status="success")]})

    task = TasksClient(api).get(TASK_ID, wait=20)

    assert task.status == "success"
    assert api.requests[-1][2] == {"wait": "20"}


@pytest.mark.parametrize(
    ("status", "raised"),
    [
        (404, TaskNotFound),
        (409, TaskConflict),
        (503, ServiceUnavailable),
        (429, ServiceUnavailable),
        (400, TasksError),
    ],
)
def test_each_refusal_becomes_its_error_with_the_services_message(status: int, raised: type) -> None:
    api = FakeTasksApi(outages=[error(status, "what the service said")])

    with pytest.raises(raised) as refused:
        TasksClient(api).get(TASK_ID)

    assert str(refused.value) == "what the service said" and refused.value.status == status


def test_cancel_posts_the_action_and_a_finished_task_is_a_conflict() -> None:
    api = FakeTasksApi(lives={TASK_ID: [task_json()], OTHER_ID: [task_json(OTHER_ID, status="success")]})
    client = TasksClient(api)

    client.cancel(TASK_ID)
    with pytest.raises(TaskConflict, match="already success"):
        client.cancel(OTHER_ID)

    assert api.cancelled == [TASK_ID]
    assert api.requests[0][:2] == ("POST", f"/tasks/{TASK_ID}/actions/cancel")


def test_create_sends_the_type_and_input_as_given() -> None:
    api = FakeTasksApi()

    task = TasksClient(api).create("convert", {"image_id": OTHER_ID, "disk_format": "qcow2"})

    assert task.status == "pending" and task.type == "convert"
    assert api.created == [{"type": "convert", "input": {"image_id": OTHER_ID, "disk_format": "qcow2"}}]


def test_list_follows_next_links_and_stops_at_max_items() -> None:
    # Given five tasks, listed two a page
    ids = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(5)]
    api = FakeTasksApi(lives={i: [task_json(i)] for i in ids}, page_size=2)
    client = TasksClient(api)

    # When all are listed, and then at most three
    everything = [task.id for task in client.list_tasks({"limit": "2"})]
    three = [task.id for task in client.list_tasks({"limit": "2"}, max_items=3)]

    # Then every page is read in order, and no page past the third task
    assert everything == ids
    assert three == ids[:3]
    pages = [params for method, path, params, _ in api.requests if path == "/tasks"]
    assert pages[:3] == [{"limit": "2"}, {"limit": "2", "marker": ids[1]}, {"limit": "2", "marker": ids[3]}]
    assert len(pages) == 3 + 2


def test_with_details_gets_only_running_and_failed_tasks() -> None:
    # Given a list answer, which (as Glance's) carries no progress nor error code
    running = task_json("00000000-0000-4000-8000-000000000001", progress=progress("fetch", MiB, 2 * MiB))
    failed = task_json("00000000-0000-4000-8000-000000000002", status="failure", error_code="image_rejected")
    done = task_json("00000000-0000-4000-8000-000000000003", status="success")
    api = FakeTasksApi(lives={t["id"]: [t] for t in (running, failed, done)})
    client = TasksClient(api)
    listed = list(client.list_tasks())
    assert all(task.progress is None and task.error_code is None for task in listed)

    # When the details are added
    detailed = client.with_details(listed)

    # Then the running and the failed ones are shown whole, in the same order; the finished one is not asked for
    assert [task.id for task in detailed] == [running["id"], failed["id"], done["id"]]
    assert detailed[0].progress is not None and detailed[0].progress.percent == 50
    assert detailed[1].error_code == "image_rejected"
    asked = sorted(path for method, path, _, _ in api.requests if path != "/tasks")
    assert asked == [f"/tasks/{running['id']}", f"/tasks/{failed['id']}"]
