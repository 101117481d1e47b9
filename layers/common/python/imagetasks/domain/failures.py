"""Turning what stopped a task into a message its owner can act on.

Processing steps raise `TaskFailure` with a user-facing message for every problem they understand
(bad image data, unreachable source, ...). Anything else is a fault of ours: the task still ends in
failure, with a message that says so without exposing internals.
"""

from __future__ import annotations

import json
from typing import Any

from imagetasks.domain.errors import DomainError

TASK_FAILURE = "TaskFailure"
#: The longest failure message a task keeps. A message from a step travels in Step Functions'
#: error object and state data (256 KiB at most) and ends in the task item: one far larger (a
#: huge URL quoted back, a runaway tool output) would make the workflow fail to record it, and the
#: user would read a generic "try again later" instead.
MAX_FAILURE_MESSAGE = 1000
ELLIPSIS = "…"
TRANSIENT_ERRORS = ("TransientError", "TransientSourceError", "TransientStorageError")


def bounded_message(message: str) -> str:
    """``message`` cut to ``MAX_FAILURE_MESSAGE`` characters, with an ellipsis when cut. Every
    failure message goes through here: when a step raises it and when the task records it."""
    if len(message) <= MAX_FAILURE_MESSAGE:
        return message
    return message[: MAX_FAILURE_MESSAGE - len(ELLIPSIS)].rstrip() + ELLIPSIS


class TaskFailure(DomainError):
    """A processing step stopped the task for a reason the task's owner should read."""

    def __init__(self, message: str) -> None:
        super().__init__(bounded_message(message))


def failure_message(error: dict[str, Any] | None, step: str = "processing") -> str:
    """The message for a Step Functions error object ({"Error": name, "Cause": text})."""
    error = error or {}
    name = str(error.get("Error", ""))
    cause = str(error.get("Cause", ""))
    if name == TASK_FAILURE or name in TRANSIENT_ERRORS:
        message = _error_message(cause)
        if message and name == TASK_FAILURE:
            return message
        if message:
            return f"{message} (gave up after several attempts; please try again later)"
    if name == "States.Timeout":
        return (
            f"The task's {step} step took longer than allowed and was stopped; "
            "try a smaller image or try again later."
        )
    if name in TRANSIENT_ERRORS or (name.startswith("Lambda.") and name != "Lambda.Unknown"):
        return f"The task's {step} step kept failing with temporary errors; please try again later."
    return f"The task stopped because of an internal error in its {step} step; please try again later."


def _error_message(cause: str) -> str | None:
    """The errorMessage of a Lambda error cause (a JSON document), if there is one."""
    try:
        detail = json.loads(cause)
    except ValueError:
        return cause or None
    message = detail.get("errorMessage") if isinstance(detail, dict) else None
    return message if isinstance(message, str) and message else None


EXECUTION_END_MESSAGES = {
    "ABORTED": "The task's workflow was stopped before the task finished.",
    "TIMED_OUT": "The task's workflow ran out of time before the task finished.",
    "FAILED": "The task's workflow failed before the task finished; please try again later.",
}
