"""The import task's steps, called by the workflow: `fetch`, then `register`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from imagetasks import composition
from imagetasks.config import settings
from imagetasks.import_task import ImportTask
from imagetasks.observability import logger, tracer
from imagetasks.steps import processing_step


class ImportStep(BaseModel):
    step: Literal["fetch", "register"]
    task_id: str
    staged: dict[str, Any] | None = None


@lru_cache(maxsize=1)
def import_task() -> ImportTask:
    return composition.import_task(settings())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_parser(model=ImportStep)
@processing_step
def lambda_handler(event: ImportStep, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(task_id=event.task_id, step=event.step)
    if event.step == "fetch":
        return import_task().fetch(event.task_id)
    seconds_left = context.get_remaining_time_in_millis() / 1000
    return import_task().register(event.task_id, event.staged or {}, seconds_left)
