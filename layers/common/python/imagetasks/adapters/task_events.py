"""Announcing a task's end on an EventBridge bus: one `Task Succeeded` or `Task Failed` event.

The event's `detail` is the task as `GET /v2/tasks/{id}` shows it, limited to its public fields
(`imagetasks.domain.task_view.event_detail`). Sending is best effort: throttling and EventBridge's
own failures are retried a few times, then `EventNotPublished` is raised for the caller to log.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imagetasks.domain.errors import DomainError
from imagetasks.domain.task_view import event_detail
from imagetasks.domain.tasks import Task, TaskStatus

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
else:
    EventBridgeClient = Any

SOURCE = "imagetasks"
DETAIL_TYPES = {TaskStatus.SUCCESS: "Task Succeeded", TaskStatus.FAILURE: "Task Failed"}
#: PutEvents answers these (for the call, or for an entry) when a retry may succeed.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "InternalFailure",
        "InternalException",
        "ServiceUnavailable",
        "InternalServerError",
    }
)
ATTEMPTS = 4
FIRST_DELAY_SECONDS = 0.1


class EventNotPublished(DomainError):
    """The event could not be sent; the task's status change stands regardless."""


class TaskEvents:
    def __init__(
        self,
        bus_name: str = "default",
        client: EventBridgeClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bus_name = bus_name
        self._client = client
        self._sleep = sleep

    @property
    def client(self) -> EventBridgeClient:
        if self._client is None:
            # The retries are ours (below), so that an entry refused inside a 200 answer is retried too.
            self._client = boto3.client(
                "events", config=Config(retries={"mode": "standard", "max_attempts": 1})
            )
        return self._client

    def task_finished(self, task: Task) -> None:
        """Send the event of `task`'s end (a task in success or failure); EventNotPublished if it
        could not be sent after the retries."""
        entry = {
            "Source": SOURCE,
            "DetailType": DETAIL_TYPES[task.status],
            "Detail": json.dumps(event_detail(task)),
            "EventBusName": self.bus_name,
        }
        problem = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                delay = FIRST_DELAY_SECONDS * 2 ** (attempt - 1)
                self._sleep(delay + random.uniform(0, delay))  # noqa: S311 - jitter, not a secret
            try:
                answer = self.client.put_events(Entries=[entry])  # type: ignore[list-item]
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                problem = code or str(error)
                if code in TRANSIENT_CODES:
                    continue
                raise EventNotPublished(f"EventBridge refused the event: {problem}") from error
            except BotoCoreError as error:  # no answer at all (connection, timeout): may succeed again
                problem = type(error).__name__
                continue
            if not answer.get("FailedEntryCount"):
                return
            failed = answer["Entries"][0]
            problem = f"{failed.get('ErrorCode', '')}: {failed.get('ErrorMessage', '')}"
            if failed.get("ErrorCode") not in TRANSIENT_CODES:
                raise EventNotPublished(f"EventBridge refused the event: {problem}")
        raise EventNotPublished(f"EventBridge did not take the event after {ATTEMPTS} attempts: {problem}")
