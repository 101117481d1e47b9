"""The import task's steps, called by the workflow: `fetch`, then `register`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagetasks import composition
from imagetasks.config import settings
from imagetasks.entrypoints.steps import StepEvent, workflow_step
from imagetasks.services.import_task import ImportTask


class ImportStep(StepEvent):
    step: Literal["fetch", "register"]
    staged: dict[str, Any] | None = None


@lru_cache(maxsize=1)
def import_task() -> ImportTask:
    return composition.import_task(settings())


@workflow_step(ImportStep)
def lambda_handler(event: ImportStep, context: LambdaContext) -> dict[str, Any]:
    if event.step == "fetch":
        return import_task().fetch(event.task_id)
    seconds_left = context.get_remaining_time_in_millis() / 1000
    return import_task().register(event.task_id, event.staged or {}, seconds_left)
