"""The workflow adapter on Step Functions (moto): how a task's execution ended, as the sweeper asks."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from imagetasks.adapters.dynamo import TransientError
from imagetasks.adapters.workflow import Workflow
from imagetasks.domain.errors import DomainError


def test_ended_says_how_an_execution_ended_and_none_while_it_runs_or_when_there_is_none(
    aws: dict[str, str],
) -> None:
    workflow = Workflow(aws["STATE_MACHINE_ARN"], boto3.client("stepfunctions"))
    workflow.start("task-running", "import")
    workflow.start("task-stopped", "import")
    assert workflow.stop("task-stopped", "Operator", "stopped by hand")

    assert workflow.ended("task-running") is None
    assert workflow.ended("task-stopped") == "ABORTED"
    assert workflow.ended("task-without-an-execution") is None  # not the workflow's to end


class Answering:
    """A Step Functions client whose every call answers with one error code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __getattr__(self, operation: str) -> Any:
        def call(**_: Any) -> Any:
            raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, operation)

        return call


@pytest.mark.parametrize(
    ("call", "refused"),
    [
        (lambda w: w.start("t", "import"), "refused to start the task"),
        (lambda w: w.ended("t"), "refused to describe the task's execution"),
        (lambda w: w.stop("t", "E", "c"), "refused to stop the task"),
    ],
)
def test_a_busy_service_is_a_transient_error_and_any_other_refusal_says_what_was_refused(
    call: Any, refused: str
) -> None:
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:m"
    with pytest.raises(TransientError, match="busy"):
        call(Workflow(arn, Answering("ThrottlingException")))  # type: ignore[arg-type]
    with pytest.raises(DomainError, match=refused) as raised:
        call(Workflow(arn, Answering("AccessDeniedException")))  # type: ignore[arg-type]
    assert not isinstance(raised.value, TransientError)
