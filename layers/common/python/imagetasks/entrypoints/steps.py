"""What every processing step has in common: user-facing errors become TaskFailure, retryable
ones keep their name (the workflow's Retry matches it), anything else is a fault of ours."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from imagetasks import task_metrics
from imagetasks.adapters.dynamo import TransientError
from imagetasks.domain.errors import DomainError, InvalidRequest, LimitExceeded, NotFound, TaskNotProcessing
from imagetasks.domain.failures import DEFAULT_FAILURE_CODE, TaskFailure, failure
from imagetasks.domain.import_errors import (
    ChecksumMismatch,
    ImageRejected,
    ImageTooLarge,
    ImportRejected,
    InvalidImportLocation,
    SourceTooSlow,
    SourceUnavailable,
    StagingError,
    TransientImportError,
)
from imagetasks.observability import logger, tracer

P = ParamSpec("P")
R = TypeVar("R")


class StepEvent(BaseModel):
    """What the workflow passes a processing step; each function narrows `step` to its own names."""

    step: str
    task_id: str


E = TypeVar("E", bound=StepEvent)
StepBody = Callable[[E, LambdaContext], dict[str, Any]]


def processing_step(function: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except (TransientError, TransientImportError, TaskFailure):
            raise
        except TaskNotProcessing as ended:
            # The task failed (step timeout, reconciler) while this step ran; the step recorded
            # nothing and removed what it wrote. Nobody may be listening any more; if the workflow
            # is, this ends its task the usual way (the failure already recorded stays).
            logger.warning("Step outlived its task; its work was discarded", extra={"reason": ended.message})
            raise TaskFailure(ended.message) from ended
        except (ImportRejected, DomainError) as refused:
            code = error_code_of(refused)
            logger.info("Task refused", extra={"reason": refused.message, "error_code": code})
            raise failure(code, refused.message) from refused

    return run


#: The error code of each kind of refusal (the most specific class listed first wins).
REFUSAL_CODES: tuple[tuple[type[Exception], str], ...] = (
    (ChecksumMismatch, "checksum_mismatch"),
    (ImageTooLarge, "too_large"),
    (LimitExceeded, "too_large"),
    (ImageRejected, "image_rejected"),
    (SourceTooSlow, "source_too_slow"),
    (SourceUnavailable, "source_unavailable"),
    (InvalidImportLocation, "invalid_input"),
    (StagingError, "service_unavailable"),
    (NotFound, "image_unavailable"),
    (InvalidRequest, "invalid_input"),
)


def error_code_of(refused: Exception) -> str:
    for kind, code in REFUSAL_CODES:
        if isinstance(refused, kind):
            return code
    return DEFAULT_FAILURE_CODE


def workflow_step(model: type[E]) -> Callable[[StepBody[E]], Callable[..., dict[str, Any]]]:
    """A processing step's Lambda handler: the Powertools wiring (logger context, tracing, `model`
    parsing), the task and step on every log line, and the error translation of `processing_step`."""

    def wire(body: StepBody[E]) -> Callable[..., dict[str, Any]]:
        @logger.inject_lambda_context
        @tracer.capture_lambda_handler
        @event_parser(model=model)
        @processing_step
        @functools.wraps(body)
        def lambda_handler(event: E, context: LambdaContext) -> dict[str, Any]:
            logger.append_keys(task_id=event.task_id, step=event.step)
            started = time.monotonic()
            try:
                return body(event, context)
            finally:  # a refused or failed run too: its time was spent all the same
                task_metrics.step_duration(event.step, time.monotonic() - started)

        return lambda_handler

    return wire
