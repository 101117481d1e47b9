"""Creating and cancelling tasks (imagetasks.services.tasks) on in-memory tables and workflow."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from imagetasks.auth.identity import Caller
from imagetasks.domain import clock
from imagetasks.domain.errors import InvalidRequest, NotFound, TaskAlreadyFinal
from imagetasks.domain.failures import CANCELLED_ERROR
from imagetasks.domain.tasks import TaskStatus, TaskType
from imagetasks.services.task_lifecycle import Lifecycle
from imagetasks.services.tasks import TaskService
from tests.fakes import InMemoryTasks, RecordingWorkflow, accept

INPUT = {"import_from": "https://example.invalid/a.qcow2", "import_from_format": "qcow2"}
MEMBER = Caller(project_id="p1", user_id="u1", roles=("member",))


def refuse(task_type: TaskType, task_input: dict[str, Any], owner: str) -> None:
    raise InvalidRequest("Input does not contain 'import_from' field")


def service(tasks: InMemoryTasks, workflow: RecordingWorkflow, validate: Any = accept) -> TaskService:
    return TaskService(tasks, workflow, validate, Lifecycle(tasks, timedelta(hours=1), 10))


def test_create_stores_a_pending_task_and_starts_its_workflow() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()

    task = service(tasks, workflow).create(TaskType.IMPORT, INPUT, "p1", user_id="u1")

    assert tasks.get(task.id) == task and task.status is TaskStatus.PENDING
    assert workflow.started == [(task.id, "import")]


def test_refused_input_writes_nothing_and_starts_nothing() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()

    with pytest.raises(InvalidRequest):
        service(tasks, workflow, refuse).create(TaskType.IMPORT, {}, "p1")

    assert tasks.tasks == {} and workflow.started == []


def test_a_chosen_id_created_twice_returns_the_first_task_and_starts_it_again() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()
    tasks_service = service(tasks, workflow)

    first = tasks_service.create(TaskType.IMPORT, INPUT, "p1", task_id="upload-1")
    again = tasks_service.create(TaskType.IMPORT, INPUT, "p1", task_id="upload-1")

    assert again == first
    assert workflow.started == [("upload-1", "import"), ("upload-1", "import")]


def test_a_chosen_id_of_another_project_is_not_handed_over() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()
    service(tasks, workflow).create(TaskType.IMPORT, INPUT, "p1", task_id="upload-1")

    with pytest.raises(Exception, match="already exists"):
        service(tasks, workflow).create(TaskType.IMPORT, INPUT, "p2", task_id="upload-1")


def test_create_failed_records_the_task_failed_with_its_code_and_no_workflow() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()

    task = service(tasks, workflow).create_failed(TaskType.IMPORT, INPUT, "p1", "No such file", code="bad")

    assert task is not None and task.status is TaskStatus.FAILURE
    assert tasks.get(task.id) == task and task.message == "No such file"
    assert workflow.started == []


def test_cancel_stops_the_running_execution_naming_who_cancelled() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()
    task = service(tasks, workflow).create(TaskType.IMPORT, INPUT, "p1")

    service(tasks, workflow).cancel(task.id, MEMBER, clock.now())

    assert workflow.stopped == [
        (task.id, CANCELLED_ERROR, "The task was cancelled by user u1 of project p1.")
    ]


def test_cancel_of_a_pending_task_without_execution_fails_it_here() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()
    task = service(tasks, workflow).create(TaskType.IMPORT, INPUT, "p1")
    workflow.running.clear()  # its start was lost

    cancelled = service(tasks, workflow).cancel(task.id, MEMBER, clock.now())

    assert cancelled.status is TaskStatus.FAILURE and "cancelled by user u1" in (cancelled.message or "")


def test_cancel_of_another_projects_task_is_not_found() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()
    task = service(tasks, workflow).create(TaskType.IMPORT, INPUT, "p2")

    with pytest.raises(NotFound):
        service(tasks, workflow).cancel(task.id, MEMBER, clock.now())
    assert workflow.stopped == []


def test_cancel_of_a_final_task_is_refused() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()
    task = service(tasks, workflow).create_failed(TaskType.IMPORT, INPUT, "p1", "refused")
    assert task is not None

    with pytest.raises(TaskAlreadyFinal):
        service(tasks, workflow).cancel(task.id, MEMBER, clock.now())


def test_cancel_is_recorded_on_the_task_before_the_execution_is_stopped() -> None:
    tasks = InMemoryTasks()
    seen: list[str | None] = []

    class Watching(RecordingWorkflow):
        def stop(self, task_id: str, error: str, cause: str) -> bool:
            seen.append(tasks.tasks[task_id].cancel_requested)
            return super().stop(task_id, error, cause)

    workflow = Watching()
    task = service(tasks, workflow).create(TaskType.IMPORT, INPUT, "p1")

    service(tasks, workflow).cancel(task.id, MEMBER, clock.now())

    assert seen == ["The task was cancelled by user u1 of project p1."]


def test_a_second_cancel_keeps_the_first_cancellers_message() -> None:
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()
    task = service(tasks, workflow).create(TaskType.IMPORT, INPUT, "p1")
    service(tasks, workflow).cancel(task.id, MEMBER, clock.now())

    service(tasks, workflow).cancel(
        task.id, Caller(project_id="ops", user_id="a1", roles=("admin",)), clock.now()
    )

    assert tasks.tasks[task.id].cancel_requested == "The task was cancelled by user u1 of project p1."


def test_cancel_of_a_processing_task_whose_execution_ended_leaves_its_end_to_the_execution() -> None:
    # Given a processing task whose execution just ended (its reconciler is on its way)
    tasks, workflow = InMemoryTasks(), RecordingWorkflow()
    task = service(tasks, workflow).create(TaskType.IMPORT, INPUT, "p1")
    processing = task.transition(TaskStatus.PROCESSING, clock.now(), timedelta(hours=1))
    tasks.save_transition(task, processing)
    workflow.running.clear()

    # When it is cancelled
    answer = service(tasks, workflow).cancel(task.id, MEMBER, clock.now())

    # Then the cancel is recorded (whoever ends it ends it cancelled) and nothing is ended here
    assert answer.status is TaskStatus.PROCESSING and answer.cancel_requested is not None
