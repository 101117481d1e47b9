"""The convert task's one step, called by the workflow: see imagetasks.conversion."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from imagetasks.config import settings
from imagetasks.conversion import ConversionService, conversion_service
from imagetasks.observability import logger, tracer
from imagetasks.steps import processing_step


class ConvertStep(BaseModel):
    step: Literal["convert"]
    task_id: str


@lru_cache(maxsize=1)
def service() -> ConversionService:
    return conversion_service(settings())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_parser(model=ConvertStep)
@processing_step
def lambda_handler(event: ConvertStep, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(task_id=event.task_id, step=event.step)
    # qemu-img gets what is left of this invocation, less the time the upload needs.
    return service().convert(event.task_id, context.get_remaining_time_in_millis() / 1000)
