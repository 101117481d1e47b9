"""In-memory fakes of the services' ports (imagetasks.services.ports), for the unit tier.

They keep what the real tables keep and refuse what the real tables refuse (a task created twice,
a write on an image that changed meanwhile), and nothing more.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import ConcurrentUpdate, NotFound, TaskAlreadyFinal
from imagetasks.domain.image_members import Member
from imagetasks.domain.images import Image
from imagetasks.domain.tasks import Task, TaskType


class InMemoryTasks:
    """TaskRecords and the part of LifecycleTasks that ending a task needs."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.parked: dict[str, str] = {}  # task id -> the workflow's token

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def get_visible(self, task_id: str, caller: Caller, moment: datetime) -> Task:
        task = self.tasks.get(task_id)
        if task is None or not caller.can_see(task.owner) or task.is_expired(moment):
            raise NotFound(f"Could not find task {task_id}")
        return task

    def create(self, task: Task) -> None:
        if task.id in self.tasks:
            raise ConcurrentUpdate(f"Task {task.id} already exists")
        self.tasks[task.id] = task

    def request_cancel(self, task_id: str, message: str) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.status.is_final:
            raise TaskAlreadyFinal(f"Task {task_id} already ended and can no longer be cancelled")
        self.tasks[task_id] = task.model_copy(
            update={"cancel_requested": task.cancel_requested or message, "version": task.version + 1}
        )

    def save_transition(self, before: Task, after: Task, **slots: Any) -> None:
        stored = self.tasks.get(before.id)
        if stored is None or (stored.version, stored.status) != (before.version, before.status):
            raise ConcurrentUpdate(f"Task {before.id} changed while it was being updated")
        self.tasks[after.id] = after

    def park(self, task_id: str, token: str) -> None:
        self.parked[task_id] = token

    def parked_token(self, task_id: str) -> str | None:
        return self.parked.get(task_id)

    def unpark(self, task_id: str) -> None:
        self.parked.pop(task_id, None)


class InMemoryImages:
    """ImageStore: `replace` and `create` answer False as the table does when their condition fails."""

    def __init__(self, *images: Image) -> None:
        self.images: dict[str, Image] = {image.id: image for image in images}

    def get(self, image_id: str) -> Image | None:
        return self.images.get(image_id)

    def create(self, image: Image, guard: Any = None) -> bool:
        if image.id in self.images:
            return False
        self.images[image.id] = image
        return True

    def replace(self, before: Image, after: Image, guard: Any = None) -> bool:
        if self.images.get(before.id) != before:
            return False
        self.images[after.id] = after
        return True

    def add_task(self, image_id: str, task_id: str, guard: Any = None) -> None:
        image = self.images[image_id]
        self.images[image_id] = image.model_copy(update={"task_ids": (*image.task_ids, task_id)})

    def delete(self, image: Image) -> None:
        self.images.pop(image.id, None)


class InMemorySharedImages:
    """SharedImages and its MemberRoster: a roster write answers False when the roster's version moved
    on since it was read, as the table's condition does; `interfere(n)` lets n other writers come first."""

    def __init__(self, *images: Image) -> None:
        self.images: dict[str, Image] = {image.id: image for image in images}
        self.rosters: dict[str, tuple[dict[str, Member], int]] = {}
        self.writes = 0
        self._interfering = 0

    @property
    def members(self) -> InMemorySharedImages:
        return self

    def interfere(self, times: int) -> None:
        self._interfering = times

    def get_visible(self, image_id: str, caller: Caller) -> Image:
        image = self.images.get(image_id)
        if image is None or not (caller.can_see(image.owner) or caller.project_id in self.roster(image)[0]):
            raise NotFound(f"No image found with ID {image_id}")
        return image

    def roster(self, image: Image) -> tuple[dict[str, Member], int]:
        members, version = self.rosters.get(image.id, ({}, 0))
        return dict(members), version

    def write(
        self,
        image: Image,
        version: int,
        members: dict[str, Member],
        changed: Member | None,
        removed: str | None,
    ) -> bool:
        self.writes += 1
        stored, stored_version = self.roster(image)
        if self._interfering:
            self._interfering -= 1
            self.rosters[image.id] = (stored, stored_version + 1)
            return False
        if stored_version != version:
            return False
        self.rosters[image.id] = (dict(members), version + 1)
        return True


class RecordingWorkflow:
    """WorkflowRunner: remembers what was started and stopped; `running` says what stop finds."""

    def __init__(self, *, fail_start: bool = False) -> None:
        self.started: list[tuple[str, str]] = []
        self.stopped: list[tuple[str, str, str]] = []
        self.running: set[str] = set()
        self.fail_start = fail_start

    def start(self, task_id: str, task_type: str) -> None:
        if self.fail_start:
            raise RuntimeError("the workflow could not be started")
        self.started.append((task_id, task_type))
        self.running.add(task_id)

    def stop(self, task_id: str, error: str, cause: str) -> bool:
        self.stopped.append((task_id, error, cause))
        if task_id not in self.running:
            return False
        self.running.discard(task_id)
        return True


def accept(task_type: TaskType, task_input: dict[str, Any], owner: str) -> None:
    """TaskService's validate: every task may start (the deployment's own checks are not the subject)."""
    return None
