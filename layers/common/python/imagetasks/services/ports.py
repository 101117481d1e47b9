"""The ports the use cases need: what they ask of the tables, the object store and the workflow.

The adapters (imagetasks.adapters) fit them without naming them; the unit tests use in-memory fakes.
Each port holds only what its use case calls, so a fake stays small.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from imagetasks.auth.identity import Caller
from imagetasks.domain.image_members import Member
from imagetasks.domain.images import Image
from imagetasks.domain.tasks import Task

#: A store's write condition (the tasks table's "this task still runs"), passed through untouched
#: into a write of the images table, so that both land in one transaction or not at all.
Guard = Any


class TaskRecords(Protocol):
    """Tasks as creating and cancelling them needs (the tasks table)."""

    def get(self, task_id: str) -> Task | None: ...

    def get_visible(self, task_id: str, caller: Caller, moment: datetime) -> Task: ...

    def create(self, task: Task) -> None: ...

    def request_cancel(self, task_id: str, message: str) -> None: ...


class StepTasks(Protocol):
    """Tasks as a processing step sees its own: read it, report progress, hold it while writing."""

    def get(self, task_id: str) -> Task | None: ...

    def processing_guard(self, task_id: str) -> Guard: ...

    def record_progress(self, task_id: str, progress: dict[str, Any]) -> None: ...

    def require_processing(self, task_id: str) -> None: ...

    def still_wanted(self, task_id: str) -> bool: ...


class LifecycleTasks(Protocol):
    """Tasks as their lifecycle moves them: transitions with the runner slots, parked waiters, the outbox.
    A transition that takes a slot raises NoFreeSlot (ProjectFull: the project's own limit) when none is free.
    """

    def get(self, task_id: str) -> Task | None: ...

    def save_transition(
        self,
        before: Task,
        after: Task,
        *,
        slot_change: int = 0,
        max_slots: int = 0,
        max_project_slots: int = 0,
        event_pending: bool = False,
    ) -> None: ...

    def park(self, task_id: str, token: str) -> None: ...

    def parked_token(self, task_id: str) -> str | None: ...

    def unpark(self, task_id: str) -> None: ...

    def parked_tasks(self) -> list[str]: ...

    def running_count(self) -> int: ...

    def oldest_pending(self, count: int, moment: datetime) -> list[str]: ...

    def oldest_processing(self, count: int, moment: datetime) -> list[str]: ...

    def announced(self, task_id: str) -> None: ...

    def unannounced(self, ended_before: datetime, limit: int = 100) -> list[str]: ...


class ImageStore(Protocol):
    """Images (the images table); writes answer False when the stored image changed meanwhile."""

    def get(self, image_id: str) -> Image | None: ...

    def accepted_member(self, image: Image, project_id: str) -> bool: ...

    def create(self, image: Image, guard: Guard | None = None) -> bool: ...

    def replace(self, before: Image, after: Image, guard: Guard | None = None) -> bool: ...

    def add_task(self, image_id: str, task_id: str, guard: Guard | None = None) -> None: ...

    def delete(self, image: Image) -> None: ...


class MemberRoster(Protocol):
    """An image's members, stored as one versioned roster (the images table's member records)."""

    def roster(self, image: Image) -> tuple[dict[str, Member], int]: ...

    def write(
        self,
        image: Image,
        version: int,
        members: dict[str, Member],
        changed: Member | None,
        removed: str | None,
    ) -> bool: ...


class SharedImages(Protocol):
    """Images as sharing them needs: the image a caller may see, and its members' roster."""

    @property
    def members(self) -> MemberRoster: ...

    def get_visible(self, image_id: str, caller: Caller) -> Image: ...


class ObjectStore(Protocol):
    """Objects (S3); `client` is handed to the streaming helpers that read and write parts."""

    @property
    def client(self) -> Any: ...

    def copy(self, source_bucket: str, source_key: str, bucket: str, key: str) -> None: ...

    def delete(self, bucket: str, key: str) -> None: ...

    def delete_if_unchanged(self, bucket: str, key: str, etag: str) -> bool: ...

    def delete_prefix(self, bucket: str, prefix: str) -> int: ...

    def presigned_get(self, bucket: str, key: str, seconds: int) -> str: ...


class WorkflowRunner(Protocol):
    """The task's workflow (Step Functions): started once per task, stopped to cancel it."""

    def start(self, task_id: str, task_type: str) -> None: ...

    def stop(self, task_id: str, error: str, cause: str) -> bool: ...

    def ended(self, task_id: str) -> str | None: ...


class Gate(Protocol):
    """Lets a parked task's workflow go on (the workflow's task token)."""

    def resume(self, token: str, output: dict[str, Any]) -> bool: ...


class TaskEventPublisher(Protocol):
    """Announces a task that reached success or failure (imagetasks.adapters.task_events)."""

    def task_finished(self, task: Task) -> None: ...
