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


#: The `error_code` of a failed task: a small, documented set a program can branch on (the message
#: is for people). Served in the task schema; docs/api.md describes each.
ERROR_CODES: dict[str, str] = {
    "invalid_input": "The task's input cannot work (e.g. a field is missing, the type is not offered).",
    "source_unavailable": "The import source did not give the image (unreachable, 404, replaced upload).",
    "source_too_slow": "The import source sent data slower than this deployment's minimum rate.",
    "image_rejected": "The image data failed one of this deployment's checks.",
    "checksum_mismatch": "The data does not match the checksum given in the task's input.",
    "too_large": "The image, or the space its work needs, is over this deployment's limits.",
    "image_unavailable": "The image a convert or export works on was deleted or is not usable.",
    "timeout": "A processing step ran longer than this deployment allows.",
    "busy": "The task waited longer than this deployment allows for a processing slot.",
    "cancelled": "Someone cancelled the task (its message says who).",
    "service_unavailable": "A service the task needs kept failing with temporary errors.",
    "internal": "An internal error of the service; trying again later may work.",
}
DEFAULT_FAILURE_CODE = "image_rejected"


class TaskFailure(DomainError):
    """A processing step stopped the task for a reason the task's owner should read.

    Raised across Step Functions, a failure keeps only its class name and message: `failure(code,
    message)` gives one whose class name carries the code too (`TaskFailure.too_large`)."""

    code = DEFAULT_FAILURE_CODE

    def __init__(self, message: str) -> None:
        super().__init__(bounded_message(message))


_FAILURE_CLASSES: dict[str, type[TaskFailure]] = {}


def failure(code: str, message: str) -> TaskFailure:
    """A TaskFailure whose error name (`TaskFailure.<code>`) tells the workflow its error code."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    cls = _FAILURE_CLASSES.get(code)
    if cls is None:
        cls = type(f"{TASK_FAILURE}.{code}", (TaskFailure,), {"code": code, "__module__": __name__})
        _FAILURE_CLASSES[code] = cls
    return cls(message)


def failure_code(error: dict[str, Any] | None) -> str:
    """The error code for a Step Functions error object ({"Error": name, "Cause": text})."""
    name = str((error or {}).get("Error", ""))
    if name.startswith(f"{TASK_FAILURE}."):
        code = name.removeprefix(f"{TASK_FAILURE}.")
        return code if code in ERROR_CODES else DEFAULT_FAILURE_CODE
    if name == TASK_FAILURE:
        return DEFAULT_FAILURE_CODE
    if name == "States.Timeout":
        return "timeout"
    if name in TRANSIENT_ERRORS or (name.startswith("Lambda.") and name != "Lambda.Unknown"):
        return "service_unavailable"
    return "internal"


def failure_message(error: dict[str, Any] | None, step: str = "processing") -> str:
    """The message for a Step Functions error object ({"Error": name, "Cause": text})."""
    error = error or {}
    name = str(error.get("Error", ""))
    cause = str(error.get("Cause", ""))
    own = name == TASK_FAILURE or name.startswith(f"{TASK_FAILURE}.")
    if own or name in TRANSIENT_ERRORS:
        message = _error_message(cause)
        if message and own:
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


#: The error StopExecution is given when a user cancels a task; its cause is the message.
CANCELLED_ERROR = "imagetasks.Cancelled"

EXECUTION_END_MESSAGES = {
    "ABORTED": "The task's workflow was stopped before the task finished.",
    "TIMED_OUT": "The task's workflow ran out of time before the task finished.",
    "FAILED": "The task's workflow failed before the task finished; please try again later.",
}

EXECUTION_END_CODES = {"ABORTED": "cancelled", "TIMED_OUT": "timeout", "FAILED": "internal"}
