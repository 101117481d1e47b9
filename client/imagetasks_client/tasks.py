"""The tasks API as the client sees it: the task and its progress, and the calls on `/v2/tasks`.

The HTTP calls go through a `Transport` (the port): in the OpenStackClient it is the image service's
openstacksdk proxy (`transport.SdkTransport`), so auth, the catalog and `--os-endpoint` are the
user's usual ones; tests give it an in-memory fake. Every non-2xx answer becomes one of the errors
below in `raise_for_status`, the one place that reads statuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

FINAL_STATUSES = frozenset({"success", "failure"})
TASK_TYPES = ("import", "convert", "export")
TASK_STATUSES = ("pending", "processing", "success", "failure")
#: Statuses whose list rows are worth a GET each: Glance's list answer (and so this service's) leaves
#: out `progress` and `error_code`, which matter while a task runs and once it failed.
DETAILED_STATUSES = frozenset({"processing", "failure"})
#: The longest long poll the service accepts (`GET /v2/tasks/{id}?wait=N`, N from 1 to 20).
MAX_WAIT_SECONDS = 20


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: its status and its JSON body (None when there is none or it is not JSON)."""

    status: int
    body: Any
    text: str = ""


class Transport(Protocol):
    """HTTP on the image API's versioned endpoint: `path` is relative to it (`/tasks/{id}`)."""

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Reply: ...


class TasksError(Exception):
    """The service refused a request; `str()` is its message, as it wrote it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TaskNotFound(TasksError):
    """404: no such task in the caller's project (or it expired)."""


class TaskConflict(TasksError):
    """409: e.g. cancelling a task that already ended."""


class ServiceUnavailable(TasksError):
    """5xx or 429: worth another try a moment later."""


@dataclass(frozen=True)
class Progress:
    step: str
    bytes_done: int
    bytes_total: int | None
    percent: int | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Progress:
        total = data.get("bytes_total")
        percent = data.get("percent")
        return cls(
            step=str(data.get("step", "")),
            bytes_done=int(data.get("bytes_done") or 0),
            bytes_total=None if total is None else int(total),
            percent=None if percent is None else int(percent),
        )


@dataclass(frozen=True)
class Task:
    """A task as `GET /v2/tasks/{id}` shows it; `raw` keeps every field, known here or not."""

    id: str
    type: str
    status: str
    progress: Progress | None
    error_code: str | None
    message: str | None
    result: Mapping[str, Any] | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        progress = data.get("progress")
        return cls(
            id=str(data["id"]),
            type=str(data.get("type", "")),
            status=str(data.get("status", "")),
            progress=Progress.from_json(progress) if isinstance(progress, Mapping) else None,
            error_code=data.get("error_code"),
            message=data.get("message"),
            result=data.get("result"),
            raw=data,
        )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


def error_message(reply: Reply) -> str:
    """The service's `{"error": {"message"}}`, or what Glance-style servers send instead."""
    body = reply.body
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if body.get("message"):
            return str(body["message"])
    return reply.text.strip() or f"HTTP {reply.status}"


def raise_for_status(reply: Reply) -> Reply:
    if reply.status < 400:
        return reply
    message = error_message(reply)
    if reply.status == 404:
        raise TaskNotFound(reply.status, message)
    if reply.status == 409:
        raise TaskConflict(reply.status, message)
    if reply.status == 429 or reply.status >= 500:
        raise ServiceUnavailable(reply.status, message)
    raise TasksError(reply.status, message)


class TasksClient:
    """The calls on `/v2/tasks` that the commands make."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def get(self, task_id: str, wait: int | None = None) -> Task:
        """The task; with `wait`, a long poll that answers once it changes (or after `wait` s)."""
        params = None if wait is None else {"wait": str(wait)}
        reply = raise_for_status(self.transport.request("GET", f"/tasks/{task_id}", params=params))
        return Task.from_json(reply.body)

    def create(self, task_type: str, task_input: Mapping[str, Any]) -> Task:
        body = {"type": task_type, "input": dict(task_input)}
        reply = raise_for_status(self.transport.request("POST", "/tasks", json=body))
        return Task.from_json(reply.body)

    def cancel(self, task_id: str) -> None:
        raise_for_status(self.transport.request("POST", f"/tasks/{task_id}/actions/cancel"))

    def list_tasks(
        self, filters: Mapping[str, str] | None = None, max_items: int | None = None
    ) -> Iterator[Task]:
        """Every task the filters select (`limit` is the page size), page after page as Glance's
        `next` link leads, at most `max_items` of them."""
        params = dict(filters or {})
        listed = 0
        while max_items is None or listed < max_items:
            reply = raise_for_status(self.transport.request("GET", "/tasks", params=params))
            for item in reply.body.get("tasks", []):
                yield Task.from_json(item)
                listed += 1
                if max_items is not None and listed >= max_items:
                    return
            next_link = reply.body.get("next")
            if not next_link:
                return
            # `next` is a path from the API's root (/v2/tasks?...): its query is what the next page needs.
            params = dict(parse_qsl(urlsplit(next_link).query))

    def with_details(self, tasks: Iterable[Task], workers: int = 4) -> list[Task]:
        """The listed tasks, those in DETAILED_STATUSES as `get` shows them (a few at a time);
        one that expired meanwhile stays as listed."""
        listed = list(tasks)

        def detailed(task: Task) -> Task:
            if task.status not in DETAILED_STATUSES:
                return task
            try:
                return self.get(task.id)
            except TaskNotFound:
                return task

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(detailed, listed))
