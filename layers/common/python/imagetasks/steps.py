"""What every processing step has in common: user-facing errors become TaskFailure, retryable
ones keep their name (the workflow's Retry matches it), anything else is a fault of ours."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from imagetasks.adapters.dynamo import TransientError
from imagetasks.domain.errors import DomainError, TaskNotProcessing
from imagetasks.domain.failures import TaskFailure
from imagetasks.domain.import_errors import ImportRejected, TransientImportError
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
        except ImportRejected as refused:
            logger.info("Task refused", extra={"reason": refused.message})
            raise TaskFailure(refused.message) from refused
        except DomainError as refused:
            logger.info("Task refused", extra={"reason": refused.message})
            raise TaskFailure(refused.message) from refused

    return run


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
            return body(event, context)

        return lambda_handler

    return wire
