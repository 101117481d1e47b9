"""Every status change a task goes through after creation, in one place.

The workflow (and the reconciler) call these; each is a conditional write through the tasks
table, so concurrent or repeated calls cannot move a final task or leak a processing slot.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from imagetasks.adapters.tasks_table import NoFreeSlot, TasksTable
from imagetasks.domain import clock
from imagetasks.domain.errors import ConcurrentUpdate
from imagetasks.domain.tasks import Task, TaskStatus
from imagetasks.observability import logger

ATTEMPTS = 5


class Lifecycle:
    def __init__(self, table: TasksTable, ttl: timedelta, max_running: int) -> None:
        self.table = table
        self.ttl = ttl
        self.max_running = max_running

    def try_start(self, task_id: str, moment: datetime | None = None) -> dict[str, bool]:
        """Take a processing slot and mark the task processing, if a slot is free and no older
        pending task is waiting for it. {"started": bool, "final": bool}."""
        for _ in range(ATTEMPTS):
            now = moment or clock.now()
            task = self.table.get(task_id)
            if task is None or task.status.is_final:
                return {"started": False, "final": True}
            if task.status is TaskStatus.PROCESSING:
                return {"started": True, "final": False}  # a retried call: the slot is already ours
            free = self.max_running - self.table.running_count()
            if free <= 0 or task_id not in self.table.oldest_pending(free, now):
                return {"started": False, "final": False}
            try:
                self.table.save_transition(
                    task,
                    task.transition(TaskStatus.PROCESSING, now, self.ttl),
                    slot_change=1,
                    max_slots=self.max_running,
                )
            except NoFreeSlot:
                return {"started": False, "final": False}
            except ConcurrentUpdate:
                continue
            logger.info("Task processing", extra={"task_id": task_id})
            return {"started": True, "final": False}
        return {"started": False, "final": False}

    def succeed(self, task_id: str, result: dict[str, Any]) -> Task | None:
        return self._finish(task_id, TaskStatus.SUCCESS, result=result)

    def fail(self, task_id: str, message: str) -> Task | None:
        return self._finish(task_id, TaskStatus.FAILURE, message=message)

    def _finish(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        result: dict[str, Any] | None = None,
        message: str | None = None,
    ) -> Task | None:
        """Move the task to a final status, giving back its slot if it held one. A task that is
        already final is left as it is (final states never change) and None is returned."""
        for _ in range(ATTEMPTS):
            task = self.table.get(task_id)
            if task is None or task.status.is_final:
                logger.info("Task already final; nothing to record", extra={"task_id": task_id})
                return None
            after = task.transition(status, clock.now(), self.ttl, result=result, message=message)
            held_slot = task.status is TaskStatus.PROCESSING
            try:
                self.table.save_transition(task, after, slot_change=-1 if held_slot else 0)
            except ConcurrentUpdate:
                continue
            logger.info("Task finished", extra={"task_id": task_id, "status": status.value})
            return after
        raise ConcurrentUpdate(f"Task {task_id} kept changing while being finished")
