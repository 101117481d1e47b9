"""The task lifecycle: which status changes are allowed, and what each change sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagetasks.domain.errors import InvalidTransition, TaskAlreadyFinal
from imagetasks.domain.tasks import TaskStatus, TaskType, new_task

T0 = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
TTL = timedelta(hours=48)


def pending() -> object:
    return new_task(
        TaskType.IMPORT, {"import_from": "https://example.invalid/a.qcow2"}, "p1", T0, user_id="u1"
    )


def test_a_new_task_is_pending_with_nothing_final_set() -> None:
    task = pending()

    assert task.status is TaskStatus.PENDING
    assert task.created_at == task.updated_at == T0
    assert task.result is None and task.message is None and task.expires_at is None
    assert task.owner == "p1" and task.user_id == "u1" and task.version == 1


@pytest.mark.parametrize(
    ("path", "final"),
    [
        ([TaskStatus.PROCESSING, TaskStatus.SUCCESS], TaskStatus.SUCCESS),
        ([TaskStatus.PROCESSING, TaskStatus.FAILURE], TaskStatus.FAILURE),
        ([TaskStatus.FAILURE], TaskStatus.FAILURE),
    ],
)
def test_allowed_paths_reach_a_final_status_with_expires_at_from_the_moment_it_was_reached(
    path: list[TaskStatus], final: TaskStatus
) -> None:
    task = pending()
    moment = T0
    for status in path:
        moment += timedelta(minutes=5)
        task = task.transition(status, moment, TTL, result={"image_id": "i-1"}, message="why")

    assert task.status is final
    assert task.updated_at == moment
    assert task.expires_at == int((moment + TTL).timestamp())
    assert task.version == 1 + len(path)


def test_success_keeps_the_result_and_no_message() -> None:
    task = (
        pending()
        .transition(TaskStatus.PROCESSING, T0, TTL)
        .transition(TaskStatus.SUCCESS, T0, TTL, result={"image_id": "i-1"})
    )

    assert task.result == {"image_id": "i-1"} and task.message is None and task.image_id == "i-1"


def test_failure_keeps_the_message_and_no_result() -> None:
    task = pending().transition(
        TaskStatus.FAILURE,
        T0,
        TTL,
        result={"image_id": "x"},
        message="Image data is qcow2 but disk_format says raw",
    )

    assert task.result is None
    assert task.message == "Image data is qcow2 but disk_format says raw"


def test_processing_is_not_final_and_has_no_expiry() -> None:
    task = pending().transition(TaskStatus.PROCESSING, T0, TTL)

    assert task.expires_at is None and not task.status.is_final


@pytest.mark.parametrize("final", [TaskStatus.SUCCESS, TaskStatus.FAILURE])
@pytest.mark.parametrize("target", list(TaskStatus))
def test_final_states_never_change(final: TaskStatus, target: TaskStatus) -> None:
    task = pending().transition(TaskStatus.PROCESSING, T0, TTL).transition(final, T0, TTL, message="m")

    with pytest.raises(TaskAlreadyFinal):
        task.transition(target, T0, TTL)


@pytest.mark.parametrize(
    ("start_path", "target"),
    [
        ([], TaskStatus.SUCCESS),
        ([], TaskStatus.PENDING),
        ([TaskStatus.PROCESSING], TaskStatus.PENDING),
        ([TaskStatus.PROCESSING], TaskStatus.PROCESSING),
    ],
)
def test_other_changes_are_refused(start_path: list[TaskStatus], target: TaskStatus) -> None:
    task = pending()
    for status in start_path:
        task = task.transition(status, T0, TTL)

    with pytest.raises(InvalidTransition):
        task.transition(target, T0, TTL)


def test_expiry_is_exclusive_of_the_moment_before_and_inclusive_of_the_moment_itself() -> None:
    task = pending().transition(TaskStatus.FAILURE, T0, TTL, message="m")
    expiry = datetime.fromtimestamp(task.expires_at, UTC)

    assert not task.is_expired(expiry - timedelta(seconds=1))
    assert task.is_expired(expiry)


@pytest.mark.parametrize(
    ("to", "code"),
    [(TaskStatus.SUCCESS, None), (TaskStatus.FAILURE, "internal"), (TaskStatus.FAILURE, "timeout")],
)
def test_a_task_whose_cancel_was_recorded_can_only_end_cancelled(to: TaskStatus, code: str | None) -> None:
    # Given a processing task whose cancel was recorded
    task = pending().transition(TaskStatus.PROCESSING, T0, TTL)
    task = task.model_copy(update={"cancel_requested": "The task was cancelled by project p1."})

    # When its step's success, or a failure of any kind, is recorded
    ended = task.transition(to, T0, TTL, result={"image_id": "i1"}, message="boom", error_code=code)

    # Then it ends cancelled, with the canceller's message, and no result
    assert ended.status is TaskStatus.FAILURE and ended.error_code == "cancelled"
    assert ended.message == "The task was cancelled by project p1." and ended.result is None
    assert ended.image_id is None


def test_a_pending_task_whose_cancel_was_recorded_may_still_take_its_slot_in_the_domain() -> None:
    # (the dispatcher ends such a task instead; the domain only refuses a success or failure other
    # than the cancellation)
    task = pending().model_copy(update={"cancel_requested": "cancelled"})

    assert task.transition(TaskStatus.PROCESSING, T0, TTL).cancel_requested == "cancelled"
