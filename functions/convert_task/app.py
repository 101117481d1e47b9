"""The convert task's one step, called by the workflow: see imagetasks.services.convert_export."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagetasks import composition
from imagetasks.config import settings
from imagetasks.entrypoints.steps import StepEvent, workflow_step
from imagetasks.services.convert_export import ConversionService


class ConvertStep(StepEvent):
    step: Literal["convert"]


@lru_cache(maxsize=1)
def service() -> ConversionService:
    return composition.conversion_service(settings())


@workflow_step(ConvertStep)
def lambda_handler(event: ConvertStep, context: LambdaContext) -> dict[str, Any]:
    # qemu-img gets what is left of this invocation, less the time the upload needs.
    return service().convert(event.task_id, context.get_remaining_time_in_millis() / 1000)
