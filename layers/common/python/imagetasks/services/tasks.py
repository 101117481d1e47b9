"""Creating a task (validate its input, store it, start its workflow) and cancelling one. Shared
by every way a task is born (the API, an upload to S3), so that they all apply the same rules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from imagetasks import task_metrics
from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import ConcurrentUpdate, TaskAlreadyFinal
from imagetasks.domain.failures import CANCELLED_ERROR
from imagetasks.domain.tasks import Task, TaskStatus, TaskType, new_task
from imagetasks.services.ports import TaskRecords, WorkflowRunner
from imagetasks.services.task_lifecycle import Lifecycle

InputValidator = Callable[[TaskType, dict[str, Any], str], None]


class TaskService:
    def __init__(
        self, table: TaskRecords, workflow: WorkflowRunner, validate: InputValidator, lifecycle: Lifecycle
    ) -> None:
        self.table = table
        self.workflow = workflow
        self.validate = validate
        self.lifecycle = lifecycle

    def create(
        self,
        task_type: TaskType,
        task_input: dict[str, Any],
        owner: str,
        *,
        user_id: str | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
    ) -> Task:
        """Raise InvalidRequest (nothing written) or return the pending task, its workflow started.

        `task_id` lets a caller that must be idempotent (an S3 event delivered twice) choose the id:
        when that task already exists, it is returned, and its workflow started if it is still
        pending (the earlier attempt may have stopped between the two writes; the start is
        idempotent by execution name)."""
        self.validate(task_type, task_input, owner)
        task = self._store(task_type, task_input, owner, user_id, request_id, task_id)
        if task.status is TaskStatus.PENDING:
            self.workflow.start(task.id, task.type.value)
        return task

    def create_failed(
        self,
        task_type: TaskType,
        task_input: dict[str, Any],
        owner: str,
        message: str,
        *,
        task_id: str | None = None,
        code: str = "invalid_input",
    ) -> Task | None:
        """Record a task that could not start (its owner should see why): stored pending, then failed
        at once with `message` and error `code`, no workflow. With an existing `task_id`, only the
        failing is redone."""
        task = self._store(task_type, task_input, owner, None, None, task_id)
        return self.lifecycle.fail(task.id, message, code, had_workflow=False)

    def _store(
        self,
        task_type: TaskType,
        task_input: dict[str, Any],
        owner: str,
        user_id: str | None,
        request_id: str | None,
        task_id: str | None,
    ) -> Task:
        task = new_task(task_type, task_input, owner, user_id=user_id, request_id=request_id)
        if task_id is None:
            self.table.create(task)
            return task
        task = task.model_copy(update={"id": task_id})
        try:
            self.table.create(task)
        except ConcurrentUpdate:
            existing = self.table.get(task_id)
            if existing is None or existing.owner != owner:
                raise
            return existing
        return task

    def cancel(self, task_id: str, caller: Caller, moment: datetime) -> Task:
        """Cancel a pending or processing task the caller may see (NotFound otherwise);
        TaskAlreadyFinal for a task that already ended.

        The cancel is first recorded on the task (a write conditional on the task not being final):
        from then on the task can only end `cancelled` (a success written later becomes the
        cancellation) and no step can create or record anything for it. Then its execution is
        stopped; the reconciler records the failure (`cancelled`, naming who) and removes what the
        task left. Without a running execution (it never started, or just ended), the failure is
        written here; what a step made is removed by whoever ended the task."""
        task = self.table.get_visible(task_id, caller, moment)
        if task.status.is_final:
            raise TaskAlreadyFinal(f"Task {task_id} is already {task.status.value} and cannot be cancelled")
        who = (
            f"user {caller.user_id} of project {caller.project_id}"
            if caller.user_id
            else (f"project {caller.project_id}")
        )
        message = f"The task was cancelled by {who}."
        self.table.request_cancel(task_id, message)
        if self.workflow.stop(task_id, CANCELLED_ERROR, message):
            task_metrics.execution_stopped_by_cancel()
            return self.table.get(task_id) or task
        # No running execution: it never started (its start failed after the task was stored), or
        # it just ended. A pending task ends here; nothing waits on its parked token any more, so
        # none is resumed (the sweeper removes the parked row). A processing one is ended by its
        # execution's end (the reconciler, or a success that finds the cancel recorded).
        current = self.table.get(task_id)
        if current is not None and current.status is TaskStatus.PENDING:
            self.lifecycle.fail(task_id, message, "cancelled", had_workflow=False)
        return self.table.get(task_id) or task
