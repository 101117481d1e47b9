"""Status changes after creation, on DynamoDB (moto): slots, order, final states, conditional writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.domain.errors import ConcurrentUpdate, TaskNotProcessing
from imagetasks.domain.failures import EXECUTION_END_MESSAGES
from imagetasks.domain.tasks import TaskStatus, TaskType, new_task
from imagetasks.services.task_lifecycle import FINAL, STARTED, Lifecycle

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def table(aws: dict[str, str]) -> TasksTable:
    return TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])


def pending_tasks(table: TasksTable, count: int, owner: str = "p1", first: int = 0) -> list[str]:
    ids = []
    for number in range(first, first + count):
        task = new_task(TaskType.IMPORT, {"n": number}, owner, T0 + timedelta(seconds=number))
        table.create(task)
        ids.append(task.id)
    return ids


@dataclass
class RecordingGate:
    """Stands in for Step Functions' SendTaskSuccess: which token was resumed with what."""

    resumed: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    live: bool = True  # False: every token is already gone (the execution ended)

    def resume(self, token: str, output: dict[str, Any]) -> bool:
        if self.live:
            self.resumed.append((token, output))
        return self.live

    def tokens(self) -> list[str]:
        return [token for token, _ in self.resumed]


def lifecycle_of(
    table: TasksTable, max_running: int, per_project: int = 0
) -> tuple[Lifecycle, RecordingGate]:
    gate = RecordingGate()
    return Lifecycle(table, timedelta(hours=1), max_running, gate, per_project), gate


def park_all(lifecycle: Lifecycle, ids: list[str]) -> list[dict[str, bool]]:
    return [lifecycle.wait_for_slot(task_id, f"token-{task_id}") for task_id in ids]


def test_parked_tasks_get_slots_in_creation_order_up_to_the_limit(table: TasksTable) -> None:
    lifecycle, gate = lifecycle_of(table, max_running=2)
    first, second, third = pending_tasks(table, 3)

    # The youngest parks first: it may take a free slot (the older ones are not waiting yet)
    answers = park_all(lifecycle, [third, second, first])

    assert answers == [STARTED, STARTED, {"started": False, "final": False}]
    assert gate.tokens() == [f"token-{third}", f"token-{second}"]
    assert table.running_count() == 2 and table.get(first).status is TaskStatus.PENDING
    assert table.parked_token(first) == f"token-{first}"  # still parked, nothing polls


def test_a_freed_slot_goes_to_the_oldest_waiter_and_resumes_it(table: TasksTable) -> None:
    lifecycle, gate = lifecycle_of(table, max_running=1)
    running, *waiting = pending_tasks(table, 4)
    park_all(lifecycle, [running])
    park_all(lifecycle, list(reversed(waiting)))  # parked youngest first: order is creation, not parking

    for task_id in [running, *waiting]:
        lifecycle.succeed(task_id, {"image_id": f"i-{task_id}"})

    assert gate.tokens() == [f"token-{task_id}" for task_id in [running, *waiting]]
    assert all(output == STARTED for _, output in gate.resumed)
    assert table.running_count() == 0 and table.parked_tasks() == []


def test_a_project_at_its_limit_lets_the_next_project_go_first(table: TasksTable) -> None:
    lifecycle, gate = lifecycle_of(table, max_running=3, per_project=2)
    busy = pending_tasks(table, 4, owner="busy")
    other = pending_tasks(table, 1, owner="other", first=10)  # created after all of busy's

    park_all(lifecycle, busy + other)

    started = {token for token in gate.tokens()}
    assert started == {f"token-{busy[0]}", f"token-{busy[1]}", f"token-{other[0]}"}
    assert table.get(busy[2]).status is TaskStatus.PENDING
    # busy's third task starts when one of its own finishes, not before
    lifecycle.succeed(other[0], {})
    assert table.get(busy[2]).status is TaskStatus.PENDING
    lifecycle.succeed(busy[0], {})
    assert table.get(busy[2]).status is TaskStatus.PROCESSING


def test_finishing_gives_the_slot_back_exactly_once(table: TasksTable) -> None:
    lifecycle, _ = lifecycle_of(table, max_running=1)
    first, second = pending_tasks(table, 2)
    park_all(lifecycle, [first, second])

    done = lifecycle.succeed(first, {"image_id": "i-1"})
    again = lifecycle.fail(first, "late failure")

    assert done is not None and done.status is TaskStatus.SUCCESS and done.result == {"image_id": "i-1"}
    assert again is None  # final states never change
    assert table.get(first).status is TaskStatus.SUCCESS
    assert table.get(second).status is TaskStatus.PROCESSING and table.running_count() == 1


def test_a_pending_task_can_fail_without_touching_the_slots(table: TasksTable) -> None:
    lifecycle, gate = lifecycle_of(table, max_running=1)
    blocker, task_id = pending_tasks(table, 2)
    park_all(lifecycle, [blocker, task_id])

    failed = lifecycle.fail(task_id, "The task's workflow was stopped before the task finished.")

    assert failed is not None and failed.status is TaskStatus.FAILURE and failed.expires_at is not None
    assert table.running_count() == 1
    assert gate.resumed[-1] == (f"token-{task_id}", FINAL)  # its parked execution is let go
    assert lifecycle.wait_for_slot(task_id, "again") == FINAL


def test_a_repeated_park_keeps_the_one_slot(table: TasksTable) -> None:
    lifecycle, _ = lifecycle_of(table, max_running=3)
    (task_id,) = pending_tasks(table, 1)

    park_all(lifecycle, [task_id])
    repeated = lifecycle.wait_for_slot(task_id, "token-retry")

    assert repeated == STARTED
    assert table.running_count() == 1


def test_the_sweeper_resumes_what_a_lost_message_left_parked(table: TasksTable) -> None:
    lifecycle, gate = lifecycle_of(table, max_running=1)
    first, second = pending_tasks(table, 2)
    gate.live = False  # the first grant's SendTaskSuccess is lost...
    park_all(lifecycle, [first])
    table.park(first, f"token-{first}")  # ...and its token is still there (the dispatcher stopped)
    table.park(second, f"token-{second}")  # parked while no dispatch ran

    gate.live = True
    swept = lifecycle.sweep()

    assert swept == {"resumed": 1, "started": 0, "announced": 0}
    assert gate.resumed == [(f"token-{first}", STARTED)]
    lifecycle.succeed(first, {})
    assert gate.resumed[-1] == (f"token-{second}", STARTED)


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

    lifecycle, _ = lifecycle_of(table, max_running=1)
    (task_id,) = pending_tasks(table, 1)
    park_all(lifecycle, [task_id])
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


def test_progress_is_stored_while_processing_and_refused_after(table: TasksTable) -> None:
    lifecycle, _ = lifecycle_of(table, max_running=1)
    (task_id,) = pending_tasks(table, 1)
    park_all(lifecycle, [task_id])

    table.record_progress(task_id, {"step": "fetch", "bytes_done": 5, "bytes_total": 10, "percent": 50})
    lifecycle.fail(task_id, "The task was cancelled by user u of project p1.", "cancelled")

    ended = table.get(task_id)
    assert ended.progress == {"step": "fetch", "bytes_done": 5, "bytes_total": 10, "percent": 50}
    assert ended.error_code == "cancelled"
    with pytest.raises(TaskNotProcessing):  # the running step learns it must stop
        table.record_progress(task_id, {"step": "fetch", "bytes_done": 6, "bytes_total": 10, "percent": 60})


CANCEL = "The task was cancelled by user u of project p1."


def test_a_recorded_cancel_refuses_progress_and_guarded_writes_before_the_task_ends(
    table: TasksTable,
) -> None:
    # Given a processing task
    lifecycle, _ = lifecycle_of(table, max_running=1)
    (task_id,) = pending_tasks(table, 1)
    park_all(lifecycle, [task_id])

    # When its cancel is recorded (the execution not stopped yet)
    table.request_cancel(task_id, CANCEL)

    # Then it is still processing, but its step may write nothing more
    assert table.get(task_id).status is TaskStatus.PROCESSING
    assert not table.still_wanted(task_id)
    with pytest.raises(TaskNotProcessing):
        table.record_progress(task_id, {"step": "fetch", "bytes_done": 6, "bytes_total": 10, "percent": 60})
    with pytest.raises(TaskNotProcessing):
        table.require_processing(task_id)
    guard = table.processing_guard(task_id)
    with pytest.raises(TaskNotProcessing):
        table.table.transact([], guard)


def test_a_success_after_a_recorded_cancel_ends_the_task_cancelled_and_frees_its_slot(
    table: TasksTable,
) -> None:
    lifecycle, _ = lifecycle_of(table, max_running=1)
    (task_id,) = pending_tasks(table, 1)
    park_all(lifecycle, [task_id])
    table.request_cancel(task_id, CANCEL)

    ended = lifecycle.succeed(task_id, {"image_id": "i1"})

    assert ended is not None and ended.status is TaskStatus.FAILURE and ended.error_code == "cancelled"
    assert ended.message == CANCEL and ended.result is None
    assert table.running_count() == 0


def test_an_execution_failed_event_after_a_recorded_cancel_ends_it_cancelled_not_internal(
    table: TasksTable,
) -> None:
    # Given a pending task whose cancel was recorded, and whose execution's last event is FAILED
    lifecycle, _ = lifecycle_of(table, max_running=1)
    (task_id,) = pending_tasks(table, 1)
    table.request_cancel(task_id, CANCEL)

    # When the reconciler records that failure
    ended = lifecycle.fail(task_id, "The task's workflow failed before the task finished.", "internal")

    # Then the task ends cancelled, with the canceller's message
    assert ended is not None and ended.error_code == "cancelled" and ended.message == CANCEL


def test_a_dispatcher_ends_a_cancelled_pending_task_instead_of_starting_it(table: TasksTable) -> None:
    # Given two parked pending tasks, the older one cancelled (its execution not stopped yet), one slot
    lifecycle, gate = lifecycle_of(table, max_running=1)
    older, newer = pending_tasks(table, 2)
    table.request_cancel(older, CANCEL)

    # When both park
    park_all(lifecycle, [older, newer])

    # Then the cancelled one ended (its execution resumed as final) and the slot went to the other
    assert table.get(older).error_code == "cancelled"
    assert table.get(newer).status is TaskStatus.PROCESSING
    assert (f"token-{older}", FINAL) in gate.resumed and (f"token-{newer}", STARTED) in gate.resumed


def test_a_cancel_of_a_final_task_is_refused_by_the_table(table: TasksTable) -> None:
    from imagetasks.domain.errors import TaskAlreadyFinal

    lifecycle, _ = lifecycle_of(table, max_running=1)
    (task_id,) = pending_tasks(table, 1)
    lifecycle.fail(task_id, "refused", "invalid_input")

    with pytest.raises(TaskAlreadyFinal):
        table.request_cancel(task_id, CANCEL)
    assert table.get(task_id).cancel_requested is None


# ---------------------------------------------------------------- tasks that outlived their execution


@dataclass
class Executions:
    """Stands in for DescribeExecution: how each task's execution ended (absent: still running)."""

    ended_as: dict[str, str] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def start(self, task_id: str, task_type: str) -> None:
        raise AssertionError("the sweeper starts nothing")

    def stop(self, task_id: str, error: str, cause: str) -> bool:
        raise AssertionError("the sweeper stops nothing")

    def ended(self, task_id: str) -> str | None:
        self.asked.append(task_id)
        return self.ended_as.get(task_id)


def sweeper_of(table: TasksTable, max_running: int) -> tuple[Lifecycle, RecordingGate, Executions]:
    gate, executions = RecordingGate(), Executions()
    return Lifecycle(table, timedelta(hours=1), max_running, gate, workflow=executions), gate, executions


def test_the_sweeper_ends_a_task_whose_execution_ended_unheard_and_hands_on_its_slot(
    table: TasksTable,
) -> None:
    # Given two processing tasks and a third waiting for a slot, and the first task's execution
    # aborted without its status change reaching the reconciler
    lifecycle, gate, executions = sweeper_of(table, max_running=2)
    orphan, running, waiting = pending_tasks(table, 3)
    park_all(lifecycle, [orphan, running, waiting])
    executions.ended_as[orphan] = "ABORTED"

    # When the sweeper runs
    ended = lifecycle.end_orphans()

    # Then that task ends as the reconciler would have ended it, and its slot goes to the waiter
    assert ended == [orphan]
    task = table.get(orphan)
    assert task.status is TaskStatus.FAILURE and task.error_code == "cancelled"
    assert task.message == EXECUTION_END_MESSAGES["ABORTED"]
    assert table.get(running).status is TaskStatus.PROCESSING  # its execution still runs
    assert table.get(waiting).status is TaskStatus.PROCESSING and table.running_count() == 2
    assert gate.resumed[-1] == (f"token-{waiting}", STARTED)
    assert sorted(executions.asked) == sorted([orphan, running])  # only processing tasks are asked


def test_a_cancel_recorded_on_a_task_whose_execution_ended_unheard_ends_it_with_that_cancel(
    table: TasksTable,
) -> None:
    # Given a processing task whose execution failed unheard, and whose owner then cancelled it
    # (the API found no running execution to stop, and left the end to the execution's event)
    lifecycle, _, executions = sweeper_of(table, max_running=1)
    (task_id,) = pending_tasks(table, 1)
    park_all(lifecycle, [task_id])
    executions.ended_as[task_id] = "FAILED"
    table.request_cancel(task_id, CANCEL)

    assert lifecycle.end_orphans() == [task_id]

    task = table.get(task_id)
    assert (task.status, task.error_code, task.message) == (TaskStatus.FAILURE, "cancelled", CANCEL)
    assert table.running_count() == 0


def test_the_sweeper_leaves_tasks_whose_execution_runs_and_ends_each_orphan_once(table: TasksTable) -> None:
    lifecycle, _, executions = sweeper_of(table, max_running=2)
    first, second = pending_tasks(table, 2)
    park_all(lifecycle, [first, second])

    assert lifecycle.end_orphans() == []
    executions.ended_as[second] = "TIMED_OUT"
    assert lifecycle.end_orphans() == [second]
    assert lifecycle.end_orphans() == []  # final: no longer listed as processing

    assert table.get(first).status is TaskStatus.PROCESSING
    assert table.get(second).error_code == "timeout"
