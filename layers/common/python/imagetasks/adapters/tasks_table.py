"""The tasks table: tasks, their list index rows, and the processing-slot counter."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from imagetasks.adapters.dynamo import ConditionFailed, DynamoDBClient, Guard, to_item
from imagetasks.adapters.indexed_table import IndexedTable, Page
from imagetasks.auth.identity import Caller
from imagetasks.domain import clock
from imagetasks.domain.errors import (
    ConcurrentUpdate,
    NoFreeSlot,
    NotFound,
    ProjectFull,
    TaskAlreadyFinal,
    TaskNotProcessing,
)
from imagetasks.domain.listing import ListRequest, SortDir
from imagetasks.domain.tasks import (
    TASK_LIST_SPEC,
    Task,
    TaskStatus,
    task_filter_values,
    task_sort_values,
)

TASK_RECORD = "task"
SLOTS_KEY = "task-slots"
PROJECT_SLOTS_PREFIX = "project-slots#"  # one counter per project: the per-project limit
#: The outbox of task events: a final task whose end is not announced yet carries this attribute,
#: which puts it in the sparse UNANNOUNCED_INDEX until the announcement succeeds.
EVENT_PENDING = "event_pending"
EVENT_PENDING_VALUE = "1"
UNANNOUNCED_INDEX = "unannounced"
#: The attribute a container-run step's outcome is written to (the state machine reads it by name).
RUNNER_OUTCOME = "runner_outcome"
#: Set on a task by a cancel request (the failure message it will end with); see `request_cancel`.
CANCEL_REQUESTED = "cancel_requested"
#: A step may still work and write for the task: it is processing and nobody asked to cancel it.
STILL_WANTED = "#s = :processing AND attribute_not_exists(#c)"
WAITER_PREFIX = "waiter#"  # the task token of an execution parked until its task gets a slot
# Fields an index row repeats so that a list page needs no read of the main items.
STUB_FIELDS = ("type", "status", "owner", "created_at", "updated_at", "expires_at")


def task_to_item(task: Task) -> dict[str, Any]:
    """The stored shape of a task: input and result are kept as JSON text, exactly as given."""
    return {
        "id": task.id,
        "record": TASK_RECORD,
        "type": task.type.value,
        "status": task.status.value,
        "input": json.dumps(task.input) if task.input is not None else None,
        "result": json.dumps(task.result) if task.result is not None else None,
        "message": task.message,
        "owner": task.owner,
        "user_id": task.user_id,
        "request_id": task.request_id,
        "image_id": task.image_id,
        "new_image_id": task.new_image_id,
        "error_code": task.error_code,
        "progress": json.dumps(task.progress) if task.progress is not None else None,
        "created_at": clock.to_stored(task.created_at),
        "updated_at": clock.to_stored(task.updated_at),
        "expires_at": task.expires_at,
        "version": task.version,
        "cancel_requested": task.cancel_requested,
    }


def task_from_item(item: dict[str, Any]) -> Task:
    return Task(
        id=item["id"],
        type=item["type"],
        status=item["status"],
        input=json.loads(item["input"]) if "input" in item else None,
        result=json.loads(item["result"]) if "result" in item else None,
        message=item.get("message"),
        owner=item["owner"],
        user_id=item.get("user_id"),
        request_id=item.get("request_id"),
        image_id=item.get("image_id"),
        new_image_id=item.get("new_image_id"),
        error_code=item.get("error_code"),
        progress=json.loads(item["progress"]) if "progress" in item else None,
        created_at=clock.from_stored(item["created_at"]),
        updated_at=clock.from_stored(item["updated_at"]),
        expires_at=item.get("expires_at"),
        version=item.get("version", 1),
        cancel_requested=item.get("cancel_requested"),
    )


class TasksTable:
    def __init__(self, table_name: str, slots_table: str, client: DynamoDBClient | None = None) -> None:
        self.table = IndexedTable(table_name, TASK_LIST_SPEC, client)
        self.slots_table = slots_table
        self.last_page: Page | None = None  # read cost of the most recent list, for metrics and tests

    def _write_ops(
        self, task: Task, condition: dict[str, Any], *, event_pending: bool = False
    ) -> list[dict[str, Any]]:
        stored = task_to_item(task)
        if event_pending:  # the outbox: in the sparse index until the end is announced
            stored[EVENT_PENDING] = EVENT_PENDING_VALUE
        rows = self.table.index_rows(
            task.id,
            task.owner,
            task_filter_values(task),
            task_sort_values(task),
            {"task_id": task.id, **{name: stored[name] for name in STUB_FIELDS}},
        )
        return self.table.put_ops(to_item(stored), rows, condition)

    def create(self, task: Task) -> None:
        ops = self._write_ops(task, {"ConditionExpression": "attribute_not_exists(id)"})
        try:
            self.table.transact(ops)
        except ConditionFailed:
            raise ConcurrentUpdate(f"Task {task.id} already exists") from None

    def get(self, task_id: str) -> Task | None:
        item = self.table.get(task_id)
        if item is None or item.get("record") != TASK_RECORD:
            return None
        return task_from_item(item)

    def processing_guard(self, task_id: str) -> Guard:
        """The condition a processing step's writes depend on: the task is still `processing` and
        nobody asked to cancel it.

        Put first in the step's transaction (the image it creates, the task it records on an image),
        so that a task that failed, timed out or was reconciled meanwhile gets nothing written for it
        (TaskNotProcessing instead)."""
        return Guard(
            check={
                "TableName": self.table.table_name,
                "Key": {"id": {"S": task_id}},
                "ConditionExpression": STILL_WANTED,
                "ExpressionAttributeNames": {"#s": "status", "#c": CANCEL_REQUESTED},
                "ExpressionAttributeValues": {":processing": {"S": TaskStatus.PROCESSING.value}},
            },
            refused=TaskNotProcessing(f"Task {task_id} is no longer processing (or was cancelled)"),
        )

    def record_progress(self, task_id: str, progress: dict[str, Any]) -> None:
        """Store a running task's progress; TaskNotProcessing once the task is no longer processing
        or its cancel was requested (cancelled, timed out, reconciled): the step then stops. The
        version is not bumped: progress is not a status change, and a transition written meanwhile
        may keep an older figure."""
        try:
            self.table.client.update_item(
                TableName=self.table.table_name,
                Key={"id": {"S": task_id}},
                UpdateExpression="SET progress = :p",
                ConditionExpression=STILL_WANTED,
                ExpressionAttributeNames={"#s": "status", "#c": CANCEL_REQUESTED},
                ExpressionAttributeValues={
                    ":p": {"S": json.dumps(progress)},
                    ":processing": {"S": TaskStatus.PROCESSING.value},
                },
            )
        except self.table.client.exceptions.ConditionalCheckFailedException:
            raise TaskNotProcessing(f"Task {task_id} is no longer processing") from None

    def record_runner_outcome(self, task_id: str, outcome: dict[str, Any]) -> None:
        """Store what a step run by the container runner ended with, for the workflow to read: an
        ECS task returns no output, so the state after it reads this attribute (RUNNER_OUTCOME).
        Not conditional on the task's status: a refusal is recorded whatever happened meanwhile."""
        try:
            self.table.client.update_item(
                TableName=self.table.table_name,
                Key={"id": {"S": task_id}},
                UpdateExpression="SET #o = :o",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeNames={"#o": RUNNER_OUTCOME},
                ExpressionAttributeValues={":o": {"S": json.dumps(outcome)}},
            )
        except self.table.client.exceptions.ConditionalCheckFailedException:
            raise TaskNotProcessing(f"Task {task_id} no longer exists") from None

    def require_processing(self, task_id: str) -> None:
        """TaskNotProcessing unless the task is `processing` now (a consistent read), for a step
        whose outcome is not a write of its own (an export: the workflow records its result)."""
        task = self.get(task_id)
        if task is None or task.status is not TaskStatus.PROCESSING or task.cancel_requested is not None:
            raise TaskNotProcessing(f"Task {task_id} is no longer processing (or was cancelled)")

    def still_wanted(self, task_id: str) -> bool:
        """Whether a step should go on working for the task: it is processing and not cancelled."""
        try:
            self.require_processing(task_id)
        except TaskNotProcessing:
            return False
        return True

    def request_cancel(self, task_id: str, message: str) -> None:
        """Record that the task is to end cancelled (with `message`), unless it is already final
        (TaskAlreadyFinal). The version moves, so a transition computed before (a success about to
        be written, a slot about to be given) is refused and computed again, cancel included; the
        first canceller's message stays."""
        try:
            self.table.client.update_item(
                TableName=self.table.table_name,
                Key={"id": {"S": task_id}},
                UpdateExpression="SET #c = if_not_exists(#c, :m), #v = #v + :one",
                ConditionExpression="#r = :record AND #s IN (:pending, :processing)",
                ExpressionAttributeNames={
                    "#c": CANCEL_REQUESTED,
                    "#v": "version",
                    "#s": "status",
                    "#r": "record",
                },
                ExpressionAttributeValues={
                    ":m": {"S": message},
                    ":one": {"N": "1"},
                    ":record": {"S": TASK_RECORD},
                    ":pending": {"S": TaskStatus.PENDING.value},
                    ":processing": {"S": TaskStatus.PROCESSING.value},
                },
            )
        except self.table.client.exceptions.ConditionalCheckFailedException:
            raise TaskAlreadyFinal(f"Task {task_id} already ended and can no longer be cancelled") from None

    def get_visible(self, task_id: str, caller: Caller, moment: datetime) -> Task:
        """The task if the caller may see it and it has not expired; NotFound otherwise (never 403)."""
        task = self.get(task_id)
        if task is None or not caller.can_see(task.owner) or task.is_expired(moment):
            raise NotFound(f"Could not find task {task_id}")
        return task

    def save_transition(
        self,
        before: Task,
        after: Task,
        *,
        slot_change: int = 0,
        max_slots: int = 0,
        max_project_slots: int = 0,
        event_pending: bool = False,
    ) -> None:
        """Write `after` only if the stored task is still exactly `before` (conditional on version),
        moving the processing-slot counters (all tasks, and the task's project) in the same
        transaction. Taking a slot is refused (NoFreeSlot, ProjectFull) when a counter is at its
        limit; a `max_project_slots` of 0 means no limit per project. `event_pending` marks the
        task's end as not announced yet (see `unannounced`)."""
        condition = {
            "ConditionExpression": "#v = :v AND #s = :s",
            "ExpressionAttributeNames": {"#v": "version", "#s": "status"},
            "ExpressionAttributeValues": {":v": {"N": str(before.version)}, ":s": {"S": before.status.value}},
        }
        ops = self._write_ops(after, condition, event_pending=event_pending)
        if slot_change:
            ops.append({"Update": self._counter_update(SLOTS_KEY, slot_change, max_slots)})
            project_limit = max_project_slots if slot_change > 0 else 0
            ops.append(
                {
                    "Update": self._counter_update(
                        PROJECT_SLOTS_PREFIX + after.owner, slot_change, project_limit
                    )
                }
            )
        try:
            self.table.transact(ops)
        except ConditionFailed as refused:
            if refused.reasons and refused.reasons[0] == "ConditionalCheckFailed":
                raise ConcurrentUpdate(f"Task {before.id} changed while it was being updated") from None
            if refused.reasons and refused.reasons[-1] == "ConditionalCheckFailed":
                raise ProjectFull() from None
            raise NoFreeSlot() from None

    def _counter_update(self, key: str, change: int, limit: int) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.slots_table,
            "Key": {"id": {"S": key}},
            "UpdateExpression": "SET running = if_not_exists(running, :zero) + :d",
            "ExpressionAttributeValues": {":zero": {"N": "0"}, ":d": {"N": str(change)}},
        }
        if change > 0 and limit > 0:
            update["ConditionExpression"] = "attribute_not_exists(running) OR running <= :room"
            update["ExpressionAttributeValues"][":room"] = {"N": str(limit - change)}
        return update

    # ------------------------------------------------------------ executions waiting for a slot

    def park(self, task_id: str, token: str) -> None:
        """Keep the task token of the execution waiting for this task's slot."""
        self.table.client.put_item(
            TableName=self.slots_table,
            Item={"id": {"S": WAITER_PREFIX + task_id}, "task_id": {"S": task_id}, "token": {"S": token}},
        )

    def parked_token(self, task_id: str) -> str | None:
        item = self.table.client.get_item(
            TableName=self.slots_table, Key={"id": {"S": WAITER_PREFIX + task_id}}, ConsistentRead=True
        ).get("Item")
        return item["token"]["S"] if item else None

    def unpark(self, task_id: str) -> None:
        self.table.client.delete_item(TableName=self.slots_table, Key={"id": {"S": WAITER_PREFIX + task_id}})

    def announced(self, task_id: str) -> None:
        """The task's end was announced: out of the outbox."""
        self.table.client.update_item(
            TableName=self.table.table_name,
            Key={"id": {"S": task_id}},
            UpdateExpression="REMOVE #p",
            ExpressionAttributeNames={"#p": EVENT_PENDING},
        )

    def unannounced(self, ended_before: datetime, limit: int = 100) -> list[str]:
        """Tasks that ended before `ended_before` and whose end was never announced (the function
        that ended them stopped, or EventBridge refused): oldest first, at most `limit`."""
        answer = self.table.client.query(
            TableName=self.table.table_name,
            IndexName=UNANNOUNCED_INDEX,
            KeyConditionExpression="#p = :pending AND updated_at < :before",
            ExpressionAttributeNames={"#p": EVENT_PENDING},
            ExpressionAttributeValues={
                ":pending": {"S": EVENT_PENDING_VALUE},
                ":before": {"S": clock.to_stored(ended_before)},
            },
            Limit=limit,
        )
        return [item["id"]["S"] for item in answer.get("Items", [])]

    def parked_tasks(self) -> list[str]:
        """Every task with a parked execution (the sweeper's list; the slots table holds only
        counters and waiters, so a scan reads little)."""
        ids: list[str] = []
        for page in self.table.client.get_paginator("scan").paginate(
            TableName=self.slots_table,
            ConsistentRead=True,
            FilterExpression="begins_with(id, :waiter)",
            ExpressionAttributeValues={":waiter": {"S": WAITER_PREFIX}},
        ):
            ids += [item["task_id"]["S"] for item in page.get("Items", [])]
        return ids

    def running_count(self) -> int:
        item = self.table.client.get_item(
            TableName=self.slots_table, Key={"id": {"S": SLOTS_KEY}}, ConsistentRead=True
        ).get("Item")
        return int(item["running"]["N"]) if item and "running" in item else 0

    def oldest_pending(self, count: int, moment: datetime) -> list[str]:
        """Ids of the `count` oldest pending tasks of all projects: they get free slots first."""
        return self._oldest(TaskStatus.PENDING, count, moment)

    def oldest_processing(self, count: int, moment: datetime) -> list[str]:
        """Ids of the `count` oldest processing tasks of all projects."""
        return self._oldest(TaskStatus.PROCESSING, count, moment)

    def _oldest(self, status: TaskStatus, count: int, moment: datetime) -> list[str]:
        page = self.table.query_page(
            TASK_LIST_SPEC.partition(None, {"status": status.value}),
            "created_at",
            SortDir.ASC,
            count,
            None,
            lambda row: True,
            int(moment.timestamp()),
        )
        return [row["record_id"] for row in page.items]

    def list(self, caller: Caller, request: ListRequest, moment: datetime) -> list[dict[str, Any]]:
        """One page of task stubs (plain stored fields) visible to the caller."""

        def marker_sort_values(task_id: str) -> dict[str, str] | None:
            task = self.get(task_id)
            if task is None or not caller.can_see(task.owner) or task.is_expired(moment):
                return None
            return task_sort_values(task)

        page = self.table.list_visible(caller, request, moment, "Task", marker_sort_values)
        if page is None:
            return []
        self.last_page = page
        return page.items
