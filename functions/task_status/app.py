"""The workflow's status changes: wait, parked, for a slot (→ processing), record success, record failure."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from imagetasks import composition
from imagetasks.config import settings
from imagetasks.domain.failures import failure_code, failure_message
from imagetasks.domain.tasks import TaskStatus
from imagetasks.observability import logger, tracer
from imagetasks.services.task_lifecycle import Lifecycle


class StatusChange(BaseModel):
    action: Literal["wait_for_slot", "succeed", "fail", "clean_up"]
    task_id: str
    token: str | None = None  # wait_for_slot: the parked state's task token
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # Step Functions' {"Error", "Cause"} from a Catch
    step: str = "processing"


@lru_cache(maxsize=1)
def lifecycle() -> Lifecycle:
    return composition.lifecycle(settings())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_parser(model=StatusChange)
def lambda_handler(event: StatusChange, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(task_id=event.task_id)
    if event.action == "wait_for_slot":
        if not event.token:
            raise ValueError("wait_for_slot needs the state's task token")
        return lifecycle().wait_for_slot(event.task_id, event.token)
    if event.action == "clean_up":
        composition.import_task(settings()).clean_up(event.task_id)
        return {"cleaned": True}
    if event.action == "succeed":
        ended = lifecycle().succeed(event.task_id, event.result or {})
        if ended is not None and ended.status is TaskStatus.FAILURE:
            # Its cancel was recorded before the success: the task ended cancelled, and what its
            # steps made (the image, the exported file) goes, as the CleanUp state would remove it.
            composition.import_task(settings()).clean_up(event.task_id)
            return {"status": "failure"}
        return {"status": "success"}
    if event.error:
        logger.warning("Task failed", extra={"error": event.error.get("Error")})
    lifecycle().fail(event.task_id, failure_message(event.error, event.step), failure_code(event.error))
    return {"status": "failure"}
