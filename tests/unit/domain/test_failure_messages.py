"""What a failed task's message says, for each way a step can end."""

from __future__ import annotations

import json
from datetime import timedelta

from imagetasks.domain import clock
from imagetasks.domain.failures import (
    EXECUTION_END_MESSAGES,
    MAX_FAILURE_MESSAGE,
    TaskFailure,
    bounded_message,
    failure_message,
)
from imagetasks.domain.tasks import TaskStatus, TaskType, new_task


def lambda_error(name: str, message: str) -> dict[str, str]:
    return {
        "Error": name,
        "Cause": json.dumps({"errorType": name, "errorMessage": message, "stackTrace": ["secret frame"]}),
    }


def test_a_task_failure_shows_its_own_message() -> None:
    assert failure_message(lambda_error("TaskFailure", "Image data is qcow2 but disk_format says raw")) == (
        "Image data is qcow2 but disk_format says raw"
    )


def test_a_transient_error_that_kept_failing_says_so_with_its_reason() -> None:
    message = failure_message(
        lambda_error("TransientSourceError", "The image source broke off after 10 bytes of 99: http://x/y")
    )

    assert message.startswith("The image source broke off after 10 bytes of 99")
    assert "several attempts" in message


def test_a_timeout_says_the_step_took_too_long() -> None:
    assert "took longer than allowed" in failure_message({"Error": "States.Timeout", "Cause": ""}, "import")


def test_an_unknown_error_never_leaks_its_text_or_stack() -> None:
    message = failure_message(lambda_error("KeyError", "'internal_field'"))

    assert (
        message
        == "The task stopped because of an internal error in its processing step; please try again later."
    )
    assert "internal_field" not in message and "secret frame" not in message


def test_no_error_object_still_gives_a_message() -> None:
    assert failure_message(None)


def test_every_execution_end_has_a_message() -> None:
    assert set(EXECUTION_END_MESSAGES) == {"ABORTED", "TIMED_OUT", "FAILED"}


def test_a_long_failure_message_is_cut_with_an_ellipsis_where_it_is_raised() -> None:
    url = "http://127.0.0.1:8000/" + "a" * 300_000

    message = TaskFailure(f"The image source answered 404 Not Found: {url}").message

    assert len(message) == MAX_FAILURE_MESSAGE
    assert message.startswith("The image source answered 404 Not Found: http://127.0.0.1:8000/aaa")
    assert message.endswith("a…")


def test_a_long_message_is_cut_when_the_task_records_it_too() -> None:
    task = new_task(TaskType.IMPORT, {}, "project-a")
    processing = task.transition(TaskStatus.PROCESSING, clock.now(), timedelta(hours=1))

    failed = processing.transition(TaskStatus.FAILURE, clock.now(), timedelta(hours=1), message="x" * 5000)

    assert failed.message == "x" * (MAX_FAILURE_MESSAGE - 1) + "…"


def test_a_message_within_the_limit_is_kept_as_it_is() -> None:
    text = "y" * MAX_FAILURE_MESSAGE

    assert bounded_message(text) == text
    assert failure_message(lambda_error("TaskFailure", text)) == text
