"""Status changes after creation, on DynamoDB (moto): slots, order, final states, conditional writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.domain.errors import ConcurrentUpdate
from imagetasks.domain.tasks import TaskStatus, TaskType, new_task
from imagetasks.lifecycle import Lifecycle

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def table(aws: dict[str, str]) -> TasksTable:
    return TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])


def pending_tasks(table: TasksTable, count: int) -> list[str]:
    ids = []
    for number in range(count):
        task = new_task(TaskType.IMPORT, {"n": number}, "p1", T0 + timedelta(seconds=number))
        table.create(task)
        ids.append(task.id)
    return ids


def test_slots_go_to_the_oldest_pending_tasks_up_to_the_limit(table: TasksTable) -> None:
    lifecycle = Lifecycle(table, timedelta(hours=1), max_running=2)
    first, second, third = pending_tasks(table, 3)

    out_of_turn = lifecycle.try_start(third)
    started = [lifecycle.try_start(first), lifecycle.try_start(second)]
    full = lifecycle.try_start(third)

    assert out_of_turn == {"started": False, "final": False}  # two older tasks are waiting
    assert started == [{"started": True, "final": False}] * 2
    assert full == {"started": False, "final": False}
    assert table.running_count() == 2
    assert table.get(third).status is TaskStatus.PENDING


def test_finishing_gives_the_slot_back_exactly_once(table: TasksTable) -> None:
    lifecycle = Lifecycle(table, timedelta(hours=1), max_running=1)
    first, second = pending_tasks(table, 2)
    lifecycle.try_start(first)

    done = lifecycle.succeed(first, {"image_id": "i-1"})
    again = lifecycle.fail(first, "late failure")
    next_started = lifecycle.try_start(second)

    assert done is not None and done.status is TaskStatus.SUCCESS and done.result == {"image_id": "i-1"}
    assert again is None  # final states never change
    assert table.get(first).status is TaskStatus.SUCCESS
    assert next_started["started"] is True and table.running_count() == 1


def test_a_pending_task_can_fail_without_touching_the_slots(table: TasksTable) -> None:
    lifecycle = Lifecycle(table, timedelta(hours=1), max_running=1)
    (task_id,) = pending_tasks(table, 1)

    failed = lifecycle.fail(task_id, "The task's workflow was stopped before the task finished.")

    assert failed is not None and failed.status is TaskStatus.FAILURE and failed.expires_at is not None
    assert table.running_count() == 0
    assert lifecycle.try_start(task_id) == {"started": False, "final": True}


def test_a_repeated_start_keeps_the_one_slot(table: TasksTable) -> None:
    lifecycle = Lifecycle(table, timedelta(hours=1), max_running=3)
    (task_id,) = pending_tasks(table, 1)

    lifecycle.try_start(task_id)
    repeated = lifecycle.try_start(task_id)

    assert repeated == {"started": True, "final": False}
    assert table.running_count() == 1


def test_a_write_based_on_a_stale_read_is_refused(table: TasksTable) -> None:
    (task_id,) = pending_tasks(table, 1)
    stale = table.get(task_id)
    table.save_transition(
        stale, stale.transition(TaskStatus.FAILURE, T0, timedelta(hours=1), message="first")
    )

    with pytest.raises(ConcurrentUpdate):
        table.save_transition(
            stale, stale.transition(TaskStatus.PROCESSING, T0, timedelta(hours=1)), slot_change=1, max_slots=5
        )

    assert table.get(task_id).message == "first" and table.running_count() == 0


def test_list_rows_follow_every_status_change(table: TasksTable, aws: dict[str, str]) -> None:
    from imagetasks.auth.identity import Caller
    from imagetasks.domain.listing import ListRequest

    lifecycle = Lifecycle(table, timedelta(hours=1), max_running=1)
    (task_id,) = pending_tasks(table, 1)
    lifecycle.try_start(task_id)
    lifecycle.fail(task_id, "m")
    caller = Caller(project_id="p1", user_id="u")

    listed = {
        status: [
            row["task_id"]
            for row in table.list(
                caller, ListRequest(sort_key="created_at", filters={"status": status}), datetime.now(UTC)
            )
        ]
        for status in ("pending", "processing", "failure")
    }

    assert listed == {"pending": [], "processing": [], "failure": [task_id]}
