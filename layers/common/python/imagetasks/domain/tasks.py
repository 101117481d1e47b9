"""The task entity and its lifecycle: the one place that says which status changes are allowed.

pending -> processing -> success | failure, and pending -> failure. success and failure are final.
The adapters enforce these rules with conditional writes (never read-then-write), using the
transition this module computes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from imagetasks.domain import clock
from imagetasks.domain.errors import InvalidTransition, TaskAlreadyFinal
from imagetasks.domain.failures import bounded_message
from imagetasks.domain.listing import MISSING, ListSpec

#: How image ids were derived from task ids before they were random (still read for such tasks).
LEGACY_IMAGE_NAMESPACE = uuid.UUID("6f1e6c1a-3f0e-4d8e-9a35-2c1b7d6f0a11")


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILURE = "failure"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILURE)


class TaskType(StrEnum):
    IMPORT = "import"
    EXPORT = "export"
    CONVERT = "convert"


ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.PROCESSING, TaskStatus.FAILURE}),
    TaskStatus.PROCESSING: frozenset({TaskStatus.SUCCESS, TaskStatus.FAILURE}),
    TaskStatus.SUCCESS: frozenset(),
    TaskStatus.FAILURE: frozenset(),
}


class Task(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    type: TaskType
    status: TaskStatus
    input: dict[str, Any] | None
    result: dict[str, Any] | None = None
    message: str | None = None
    owner: str
    user_id: str | None = None
    request_id: str | None = None
    image_id: str | None = None
    # The id of the image an import or convert creates: random, chosen when the task is stored, and
    # never shown before the image exists, so no project can predict it or create an image with it.
    new_image_id: str | None = None
    error_code: str | None = None  # on a failed task: one of domain.failures.ERROR_CODES
    progress: dict[str, Any] | None = None  # the running step's figures (domain.progress), kept at the end
    created_at: datetime
    updated_at: datetime
    expires_at: int | None = None  # epoch seconds: DynamoDB TTL deletes the task after this
    version: int = 1  # bumped on every change; makes each write conditional on what was read
    # Set (to the failure message) by a cancel request while the task was not final: from then on
    # the task can only end `cancelled`, and no step may create or record anything for it.
    cancel_requested: str | None = None

    @property
    def created_image_id(self) -> str:
        """The id of the image this task creates (a task stored before ids were random: its old,
        derived id; the register step then refuses an image that is not this task's)."""
        return self.new_image_id or str(uuid.uuid5(LEGACY_IMAGE_NAMESPACE, self.id))

    def is_expired(self, moment: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= int(moment.timestamp())

    def transition(
        self,
        to: TaskStatus,
        moment: datetime,
        ttl: timedelta,
        *,
        result: dict[str, Any] | None = None,
        message: str | None = None,
        error_code: str | None = None,
    ) -> Task:
        """The task after moving to `to`, or InvalidTransition if the lifecycle forbids it."""
        if self.status.is_final:
            raise TaskAlreadyFinal(f"Task {self.id} is already {self.status} and cannot change")
        if self.cancel_requested is not None and to.is_final:
            # Whatever ends a task whose cancel was recorded (its success, a step's failure, the
            # reconciler) ends it cancelled, with the canceller's message.
            to, result, message, error_code = TaskStatus.FAILURE, None, self.cancel_requested, "cancelled"
        if to not in ALLOWED_TRANSITIONS[self.status]:
            raise InvalidTransition(f"Task {self.id} cannot go from {self.status} to {to}")
        changes: dict[str, Any] = {"status": to, "updated_at": moment, "version": self.version + 1}
        if to.is_final:
            changes["expires_at"] = int((moment + ttl).timestamp())
        if to is TaskStatus.SUCCESS:
            changes["result"] = result or {}
            changes["message"] = None
        if to is TaskStatus.FAILURE:
            changes["result"] = None
            changes["message"] = bounded_message(message or "The task failed for an unknown reason.")
            changes["error_code"] = error_code or "internal"
        if result and result.get("image_id"):
            changes["image_id"] = str(result["image_id"])
        return self.model_copy(update=changes)


def new_task(
    task_type: TaskType,
    task_input: dict[str, Any],
    owner: str,
    moment: datetime | None = None,
    *,
    user_id: str | None = None,
    request_id: str | None = None,
    image_id: str | None = None,
) -> Task:
    created = moment or clock.now()
    return Task(
        id=str(uuid.uuid4()),
        type=task_type,
        status=TaskStatus.PENDING,
        input=task_input,
        owner=owner,
        user_id=user_id,
        request_id=request_id,
        image_id=image_id,
        new_image_id=str(uuid.uuid4()) if task_type in (TaskType.IMPORT, TaskType.CONVERT) else None,
        created_at=created,
        updated_at=created,
    )


TASK_LIST_SPEC = ListSpec(
    sort_keys=("created_at", "updated_at", "status", "type", "id", "expires_at", "owner"),
    default_sort_key="created_at",
    filters=("status", "type"),
)


def task_sort_values(task: Task) -> dict[str, str]:
    """One sortable string per sort key; ties break by created_at, then id, in the same direction."""
    created = clock.to_stored(task.created_at)
    tail = f"{created}#{task.id}"
    expires = f"{task.expires_at:012d}" if task.expires_at is not None else MISSING
    return {
        "created_at": tail,
        "updated_at": f"{clock.to_stored(task.updated_at)}#{tail}",
        "status": f"{task.status.value}#{tail}",
        "type": f"{task.type.value}#{tail}",
        "id": task.id,
        "expires_at": f"{expires}#{tail}",
        "owner": f"{task.owner}#{tail}",
    }


def task_filter_values(task: Task) -> dict[str, str]:
    return {"status": task.status.value, "type": task.type.value}
