"""The error_code of a failed task: from what a step raised, through Step Functions' error name."""

from __future__ import annotations

import json

import pytest

from imagetasks.domain.errors import InvalidRequest, NotFound
from imagetasks.domain.failures import ERROR_CODES, TaskFailure, failure, failure_code, failure_message
from imagetasks.domain.import_errors import (
    ChecksumMismatch,
    DiskFormatNotAllowed,
    ImageTooLarge,
    InvalidImportLocation,
    SourceChanged,
    SourceTooSlow,
    SourceUnavailable,
)
from imagetasks.entrypoints.steps import processing_step


def step_error(raised: TaskFailure) -> dict[str, str]:
    """What Step Functions hands the workflow's Catch for a Lambda that raised `raised`."""
    cause = {"errorMessage": str(raised), "errorType": type(raised).__name__, "stackTrace": []}
    return {"Error": type(raised).__name__, "Cause": json.dumps(cause)}


@pytest.mark.parametrize(
    ("refusal", "code"),
    [
        (ChecksumMismatch("checksum differs"), "checksum_mismatch"),
        (ImageTooLarge("too big"), "too_large"),
        (DiskFormatNotAllowed("no iso here"), "image_rejected"),
        (SourceTooSlow("12 KiB/s"), "source_too_slow"),
        (SourceChanged("replaced"), "source_unavailable"),
        (SourceUnavailable("404"), "source_unavailable"),
        (InvalidImportLocation("file:// refused"), "invalid_input"),
        (NotFound("image gone"), "image_unavailable"),
        (InvalidRequest("missing field"), "invalid_input"),
    ],
)
def test_a_refusal_reaches_the_task_as_its_code_and_message(refusal: Exception, code: str) -> None:
    @processing_step
    def step() -> None:
        raise refusal

    with pytest.raises(TaskFailure) as raised:
        step()

    error = step_error(raised.value)
    assert error["Error"] == f"TaskFailure.{code}"
    assert failure_code(error) == code
    assert failure_message(error) == str(refusal)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"Error": "States.Timeout", "Cause": ""}, "timeout"),
        ({"Error": "TransientStorageError", "Cause": "{}"}, "service_unavailable"),
        ({"Error": "Lambda.ServiceException", "Cause": ""}, "service_unavailable"),
        ({"Error": "KeyError", "Cause": "{}"}, "internal"),
        ({"Error": "TaskFailure", "Cause": "{}"}, "image_rejected"),
        ({"Error": "TaskFailure.busy", "Cause": "{}"}, "busy"),
        ({"Error": "TaskFailure.no_such_code", "Cause": "{}"}, "image_rejected"),
        (None, "internal"),
    ],
)
def test_workflow_errors_have_codes(error: dict[str, str] | None, code: str) -> None:
    assert failure_code(error) == code
    assert code in ERROR_CODES


def test_a_code_must_be_one_of_the_documented_set() -> None:
    with pytest.raises(ValueError):
        failure("mystery", "m")
    assert type(failure("busy", "m")) is type(failure("busy", "other"))  # one class per code
