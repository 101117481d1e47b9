"""A task's end announced on EventBridge: once, by the call that wins the final transition, best effort."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from imagetasks import composition
from imagetasks.adapters.task_events import ATTEMPTS, DETAIL_TYPES, SOURCE, EventNotPublished, TaskEvents
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.config import settings
from imagetasks.domain import clock
from imagetasks.domain.task_view import EVENT_FIELDS, event_detail, render
from imagetasks.domain.tasks import Task, TaskStatus, TaskType, new_task
from imagetasks.services.task_lifecycle import OUTBOX_GRACE, Lifecycle

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


class RecordingEvents:
    """Our publisher port, in memory: the tasks announced."""

    def __init__(self) -> None:
        self.announced: list[Task] = []

    def task_finished(self, task: Task) -> None:
        self.announced.append(task)


class BrokenEvents:
    """A publisher whose every send fails (EventBridge unreachable after the retries)."""

    def __init__(self) -> None:
        self.calls = 0

    def task_finished(self, task: Task) -> None:
        self.calls += 1
        raise EventNotPublished("EventBridge did not take the event")


@pytest.fixture
def table(aws: dict[str, str]) -> TasksTable:
    return TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])


def running_task(table: TasksTable, owner: str = "p1") -> str:
    """A processing task holding a slot (an import whose URL carries credentials)."""
    task = new_task(TaskType.IMPORT, {"import_from": "https://user:secret@example.invalid/x"}, owner, T0)
    table.create(task)
    started = task.transition(TaskStatus.PROCESSING, T0, timedelta(hours=1))
    table.save_transition(task, started, slot_change=1, max_slots=4)
    return task.id


def lifecycle_with(table: TasksTable, events: Any) -> Lifecycle:
    return Lifecycle(table, timedelta(hours=1), 4, events=events)


def bus_reader() -> str:
    """A rule on the default bus sending imagetasks events to a queue (moto delivers to SQS): its URL."""
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="task-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events = boto3.client("events")
    events.put_rule(Name="task-events", EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="task-events", Targets=[{"Id": "queue", "Arn": queue_arn}])
    return queue_url


def received(queue_url: str) -> list[dict[str, Any]]:
    messages = boto3.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    return [json.loads(message["Body"]) for message in messages.get("Messages", [])]


# ------------------------------------------------------------------ once, by the winner


def test_a_success_is_announced_once_and_a_repeated_finish_announces_nothing(table: TasksTable) -> None:
    # Given a task and a lifecycle that announces
    events = RecordingEvents()
    lifecycle = lifecycle_with(table, events)
    task_id = running_task(table)

    # When it succeeds, and the workflow retries the same step, and the reconciler tries to fail it
    finished = lifecycle.succeed(task_id, {"image_id": "i1"})
    assert lifecycle.succeed(task_id, {"image_id": "i1"}) is None
    assert lifecycle.fail(task_id, "execution aborted", "internal") is None

    # Then exactly one announcement, of the final task as stored
    assert finished is not None
    assert events.announced == [finished]
    assert events.announced[0].status is TaskStatus.SUCCESS
    assert table.get(task_id) == finished


def test_a_failure_is_announced_once(table: TasksTable) -> None:
    # a pending task ended before it ran (as a cancel does) is announced too
    events = RecordingEvents()
    lifecycle = lifecycle_with(table, events)
    task = new_task(TaskType.IMPORT, {}, "p1", T0)
    table.create(task)
    task_id = task.id

    lifecycle.fail(task_id, "The image source answered 404 Not Found", "source_unavailable")
    lifecycle.fail(task_id, "again", "internal")

    assert [(t.id, t.status, t.error_code) for t in events.announced] == [
        (task_id, TaskStatus.FAILURE, "source_unavailable")
    ]


def test_a_failed_announcement_is_logged_and_the_status_change_stands(
    table: TasksTable, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a publisher that cannot send
    events = BrokenEvents()
    lifecycle = lifecycle_with(table, events)
    task_id = running_task(table)

    # When the task succeeds
    finished = lifecycle.succeed(task_id, {"image_id": "i1"})

    # Then the success is recorded and returned, the send was tried once (not the transition again),
    # and the loss is logged with the task's id
    assert finished is not None and finished.status is TaskStatus.SUCCESS
    assert table.get(task_id).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    assert events.calls == 1
    lost = [record for record in caplog.records if record.getMessage() == "Task event not published"]
    assert len(lost) == 1 and lost[0].levelname == "ERROR"
    assert getattr(lost[0], "task_id", None) == task_id and lost[0].exc_info is not None
    # a retried status change finds the task final: no second attempt
    assert lifecycle.succeed(task_id, {"image_id": "i1"}) is None
    assert events.calls == 1


class FlakyEvents(RecordingEvents):
    """A publisher that fails its first `failures` sends (EventBridge down, or the finisher died)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def task_finished(self, task: Task) -> None:
        if self.failures:
            self.failures -= 1
            raise EventNotPublished("EventBridge did not take the event")
        super().task_finished(task)


def test_an_announced_end_leaves_nothing_in_the_outbox(table: TasksTable) -> None:
    lifecycle = lifecycle_with(table, RecordingEvents())
    task_id = running_task(table)

    lifecycle.succeed(task_id, {"image_id": "i1"})

    assert table.unannounced(datetime.now(UTC) + timedelta(days=1)) == []


def test_an_end_that_could_not_be_announced_is_announced_by_the_sweeper_once(
    table: TasksTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a task whose end could not be announced (the publisher failed once)
    events = FlakyEvents(failures=1)
    lifecycle = lifecycle_with(table, events)
    task_id = running_task(table)
    lifecycle.fail(task_id, "The source went away", "source_unavailable")
    assert events.announced == [] and table.unannounced(datetime.now(UTC) + timedelta(days=1)) == [task_id]

    # When the sweeper runs before the grace has passed, then after it
    early = lifecycle.sweep()
    monkeypatch.setattr(clock, "now", lambda: datetime.now(UTC) + OUTBOX_GRACE + timedelta(seconds=1))
    late = lifecycle.sweep()
    again = lifecycle.sweep()

    # Then only the late run announces it, with the task as it ended, and the outbox is empty
    assert (early["announced"], late["announced"], again["announced"]) == (0, 1, 0)
    assert [(t.id, t.status, t.error_code) for t in events.announced] == [
        (task_id, TaskStatus.FAILURE, "source_unavailable")
    ]
    assert table.unannounced(datetime.now(UTC) + timedelta(days=1)) == []


# ------------------------------------------------------------------ what the event says


def test_the_detail_is_the_tasks_public_view_without_input_or_internals(table: TasksTable) -> None:
    events = RecordingEvents()
    task_id = running_task(table)
    finished = lifecycle_with(table, events).fail(task_id, "no such image", "source_unavailable")
    assert finished is not None

    detail = event_detail(finished)

    view = render(finished)
    assert detail == {name: view[name] for name in EVENT_FIELDS if name in view}
    assert detail["status"] == "failure" and detail["error_code"] == "source_unavailable"
    assert detail["expires_at"] == view["expires_at"] and detail["updated_at"] == view["updated_at"]
    for hidden in ("input", "version", "self", "schema"):
        assert hidden not in detail
    assert "secret" not in json.dumps(detail)


def test_the_deployed_composition_puts_one_event_on_the_bus(aws: dict[str, str], table: TasksTable) -> None:
    # Given a subscriber to imagetasks events on the default bus
    queue_url = bus_reader()
    task_id = running_task(table)

    # When the lifecycle the functions use ends the task (twice)
    lifecycle = composition.lifecycle(settings())
    finished = lifecycle.succeed(task_id, {"image_id": "i1"})
    lifecycle.succeed(task_id, {"image_id": "i1"})

    # Then one Task Succeeded event with the task's public fields
    assert finished is not None
    messages = received(queue_url)
    assert [(m["source"], m["detail-type"]) for m in messages] == [(SOURCE, DETAIL_TYPES[TaskStatus.SUCCESS])]
    assert messages[0]["detail"] == event_detail(finished)


# ------------------------------------------------------------------ retries


def throttled_entry() -> dict[str, Any]:
    return {
        "FailedEntryCount": 1,
        "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}],
    }


def a_task() -> Task:
    task = new_task(TaskType.IMPORT, {"import_from": "https://example.invalid/x"}, "p1", T0)
    return task.transition(TaskStatus.FAILURE, T0, timedelta(hours=1), message="m", error_code="internal")


def test_a_throttled_send_is_retried_until_it_is_taken() -> None:
    client = boto3.client("events", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_response("put_events", throttled_entry())
    stubber.add_client_error("put_events", service_error_code="ThrottlingException", http_status_code=400)
    stubber.add_response("put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "e1"}]})
    pauses: list[float] = []

    with stubber:
        TaskEvents("default", client, sleep=pauses.append).task_finished(a_task())

    stubber.assert_no_pending_responses()
    assert len(pauses) == 2


def test_a_send_still_throttled_after_the_retries_is_reported() -> None:
    client = boto3.client("events", region_name="us-east-1")
    stubber = Stubber(client)
    for _ in range(ATTEMPTS):
        stubber.add_response("put_events", throttled_entry())

    with stubber, pytest.raises(EventNotPublished, match="ThrottlingException"):
        TaskEvents("default", client, sleep=lambda _: None).task_finished(a_task())
    stubber.assert_no_pending_responses()


def test_a_refused_send_is_not_retried() -> None:
    client = boto3.client("events", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error("put_events", service_error_code="AccessDeniedException", http_status_code=400)

    with stubber, pytest.raises(EventNotPublished, match="AccessDeniedException"):
        TaskEvents("default", client, sleep=lambda _: None).task_finished(a_task())
