"""Starting a task's Step Functions execution, and resuming it when its task gets a slot."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from imagetasks.adapters.dynamo import TransientError
from imagetasks.domain.errors import DomainError

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient
else:
    SFNClient = Any


#: Step Functions' answers that say "busy, try again": the same call may succeed if retried.
BUSY_CODES = ("ThrottlingException", "ServiceUnavailable", "InternalServerError")


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _refusal(error: ClientError, refused: str) -> DomainError:
    """What to raise for an answer the caller does not handle itself: TransientError when Step
    Functions is busy (the workflow's Retry policy matches it), DomainError(refused) otherwise."""
    if _code(error) in BUSY_CODES:
        return TransientError("The workflow service is busy")
    return DomainError(refused)


class Workflow:
    def __init__(self, state_machine_arn: str, client: SFNClient | None = None) -> None:
        self.state_machine_arn = state_machine_arn
        self._client = client

    @property
    def client(self) -> SFNClient:
        if self._client is None:
            self._client = boto3.client("stepfunctions")
        return self._client

    def start(self, task_id: str, task_type: str) -> None:
        """Start the task's execution, named after the task: a repeated start cannot run it twice."""
        try:
            self.client.start_execution(
                stateMachineArn=self.state_machine_arn,
                name=task_id,
                input=json.dumps({"task_id": task_id, "type": task_type}),
            )
        except ClientError as error:
            if _code(error) == "ExecutionAlreadyExists":
                return
            raise _refusal(error, "The workflow service refused to start the task") from error

    def _execution_arn(self, task_id: str) -> str:
        return f"{self.state_machine_arn.replace(':stateMachine:', ':execution:')}:{task_id}"

    def ended(self, task_id: str) -> str | None:
        """How the task's execution ended (SUCCEEDED, FAILED, TIMED_OUT, ABORTED), or None while it
        runs, or when the task has none: a task made without its workflow (`make invoke` makes such
        tasks for a step's event) is not the workflow's to end."""
        try:
            status = self.client.describe_execution(executionArn=self._execution_arn(task_id))["status"]
        except ClientError as error:
            if _code(error) == "ExecutionDoesNotExist":
                return None
            raise _refusal(error, "The workflow service refused to describe the task's execution") from error
        return None if status in ("RUNNING", "PENDING_REDRIVE") else str(status)

    def stop(self, task_id: str, error: str, cause: str) -> bool:
        """Stop the task's execution (its running step is not stopped by this: it notices through
        the task's status); False when there is no running execution to stop."""
        execution = self._execution_arn(task_id)
        try:
            described = self.client.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING":
                return False
            self.client.stop_execution(executionArn=execution, error=error, cause=cause)
        except ClientError as answer:  # (`error` is the stop's own error name)
            if _code(answer) == "ExecutionDoesNotExist":
                return False
            raise _refusal(answer, "The workflow service refused to stop the task") from answer
        return True


class SlotGate:
    """Resumes an execution parked on a task token (`lambda:invoke.waitForTaskToken`)."""

    def __init__(self, client: SFNClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> SFNClient:
        if self._client is None:
            self._client = boto3.client("stepfunctions")
        return self._client

    def resume(self, token: str, output: dict[str, Any]) -> bool:
        """Send the parked state its output; False when the token is no longer waiting (the state
        was already resumed, timed out, or its execution ended): nothing is left to resume."""
        try:
            self.client.send_task_success(taskToken=token, output=json.dumps(output))
        except ClientError as error:
            code = _code(error)
            if code in ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken"):
                return False
            if code in BUSY_CODES:
                raise TransientError("The workflow service is busy") from error
            raise
        return True
