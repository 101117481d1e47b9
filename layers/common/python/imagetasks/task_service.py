"""Creating a task: validate its input, store it, start its workflow. Shared by every way a task is
born (the API, an upload to S3), so that they all apply the same rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.adapters.workflow import Workflow
from imagetasks.domain.tasks import Task, TaskType, new_task

InputValidator = Callable[[TaskType, dict[str, Any], str], None]


class TaskService:
    def __init__(self, table: TasksTable, workflow: Workflow, validate: InputValidator) -> None:
        self.table = table
        self.workflow = workflow
        self.validate = validate

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

        `task_id` lets a caller that must be idempotent (an S3 event delivered twice) choose the id."""
        self.validate(task_type, task_input, owner)
        task = new_task(task_type, task_input, owner, user_id=user_id, request_id=request_id)
        if task_id is not None:
            task = task.model_copy(update={"id": task_id})
        self.table.create(task)
        self.workflow.start(task.id, task.type.value)
        return task
