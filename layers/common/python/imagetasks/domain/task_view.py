"""A task as its readers see it: `GET /v2/tasks/{id}` and the events sent when a task ends.

One definition for both, so an event never says more (or less) than the API would.
"""

from __future__ import annotations

from typing import Any

from imagetasks.domain import clock
from imagetasks.domain.tasks import Task

TASK_PATH = "/v2/tasks"

#: What a completion event's `detail` carries: the task's public fields without its `input` (an
#: import URL may hold credentials, and a bus is often read by more principals than the task's
#: project), Glance's links, or the request id; never internal fields such as `version`.
EVENT_FIELDS = (
    "id",
    "type",
    "status",
    "owner",
    "user_id",
    "result",
    "message",
    "error_code",
    "image_id",
    "created_at",
    "updated_at",
    "expires_at",
    "progress",
)


def render(task: Task) -> dict[str, Any]:
    """The task as `GET /v2/tasks/{id}` answers it (Glance's fields; optional ones only when set)."""
    view: dict[str, Any] = {
        "id": task.id,
        "type": task.type.value,
        "status": task.status.value,
        "input": task.input,
        "result": task.result,
        "message": task.message,
        "owner": task.owner,
        "created_at": clock.to_api(task.created_at),
        "updated_at": clock.to_api(task.updated_at),
        "self": f"{TASK_PATH}/{task.id}",
        "schema": "/v2/schemas/task",
    }
    if task.expires_at is not None:
        view["expires_at"] = clock.epoch_to_api(task.expires_at)
    for optional in ("user_id", "request_id", "image_id", "error_code", "progress"):
        value = getattr(task, optional)
        if value:
            view[optional] = value
    return view


def event_detail(task: Task) -> dict[str, Any]:
    """The `detail` of the event a task's end sends: its rendering, limited to `EVENT_FIELDS`."""
    view = render(task)
    return {name: view[name] for name in EVENT_FIELDS if name in view}
