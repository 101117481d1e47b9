"""Ends in failure the task of an execution that stopped outside the workflow's control.

EventBridge delivers "Step Functions Execution Status Change" events for FAILED, TIMED_OUT and
ABORTED executions; the execution is named after its task. A task that already reached a final
state is left alone. A scheduled event (every minute) runs the sweeper instead: the tasks of executions
that ended without their event reaching this function, and the slots and parked executions a lost
message left behind.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagetasks import composition
from imagetasks.config import settings
from imagetasks.domain.failures import CANCELLED_ERROR, EXECUTION_END_CODES, EXECUTION_END_MESSAGES
from imagetasks.domain.tasks import TaskStatus
from imagetasks.observability import logger, tracer
from imagetasks.services.task_lifecycle import Lifecycle


@lru_cache(maxsize=1)
def lifecycle() -> Lifecycle:
    return composition.lifecycle(settings())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    if event.detail_type == "Scheduled Event":
        # Tasks whose execution ended unheard first: the slots they free go out in the same sweep.
        orphans = lifecycle().end_orphans()
        for task_id in orphans:
            clean_up(task_id)
        return {**lifecycle().sweep(), "ended": len(orphans)}
    detail = event.detail
    task_id = str(detail.get("name", ""))
    status = str(detail.get("status", ""))
    message = EXECUTION_END_MESSAGES.get(status)
    if not task_id or message is None:
        logger.warning("Ignoring an execution event this function does not handle", extra={"status": status})
        return {"reconciled": False}
    code = EXECUTION_END_CODES[status]
    if status == "ABORTED" and detail.get("error") == CANCELLED_ERROR and detail.get("cause"):
        message, code = str(detail["cause"]), "cancelled"  # written by the cancel request
    finished = lifecycle().fail(task_id, message, code)
    task = finished or lifecycle().table.get(task_id)
    if task is not None and task.status is TaskStatus.FAILURE:
        clean_up(task_id)
    logger.info("Execution ended outside the workflow", extra={"task_id": task_id, "status": status})
    return {"reconciled": finished is not None}


def clean_up(task_id: str) -> None:
    """The workflow's own CleanUp step did not run: a step may still have staged data or image bits
    after the execution stopped. The task is final now, so nothing will add more (a step still
    running finds it so and removes what it writes)."""
    composition.import_task(settings()).clean_up(task_id)
