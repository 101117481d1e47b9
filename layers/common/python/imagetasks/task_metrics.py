"""The service's own CloudWatch metrics: what the template's alarms and dashboard watch.

Each is written at once as its own embedded-metric-format line on stdout (Powertools'
`single_metric`), in the namespace POWERTOOLS_METRICS_NAMESPACE names (`imagetasks`), with the
`service` dimension (POWERTOOLS_SERVICE_NAME) and the dimensions listed here: no handler has to
flush them, and a metric's dimensions do not leak onto another's. CloudWatch tells metrics apart
by name *and* dimension set, so an alarm must name exactly these (tests/integration/
test_metrics_contract.py checks the template against what the code writes).
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from imagetasks.observability import logger

TASKS_CREATED = "TasksCreated"  # type
TASKS_SUCCEEDED = "TasksSucceeded"  # type
TASKS_FAILED = "TasksFailed"  # type, error_code
BYTES_IMPORTED = "BytesImported"  # the size of each image an import registered
STEP_DURATION = "StepDuration"  # step: seconds one run of a processing step took on Lambda
SLOT_WAIT = "SlotWaitSeconds"  # from a task's creation to its slot
SLOTS_IN_USE = "SlotsInUse"  # every minute (the sweeper): tasks holding a slot
OLDEST_WAITING_TASK_AGE = "OldestWaitingTaskAgeSeconds"  # every minute: the oldest pending task's age
EVENTS_NOT_PUBLISHED = "TaskEventsNotPublished"  # a task's end EventBridge refused (the outbox retries)
#: A cancel request stopped the task's running execution: the aborted executions that are expected.
EXECUTIONS_STOPPED_BY_CANCEL = "ExecutionsStoppedByCancel"


def emit(name: str, unit: MetricUnit, value: float, **dimensions: str) -> None:
    """One metric with its own dimensions; a failure to write it is logged, never raised (a metric
    must not fail the work it measures)."""
    try:
        with single_metric(name=name, unit=unit, value=value) as metric:
            for key, dimension in dimensions.items():
                metric.add_dimension(name=key, value=dimension)
    except Exception:
        logger.exception("Metric not written", extra={"metric": name})


def task_created(task_type: str) -> None:
    emit(TASKS_CREATED, MetricUnit.Count, 1, type=task_type)


def task_finished(task_type: str, succeeded: bool, error_code: str | None) -> None:
    if succeeded:
        emit(TASKS_SUCCEEDED, MetricUnit.Count, 1, type=task_type)
    else:
        emit(TASKS_FAILED, MetricUnit.Count, 1, type=task_type, error_code=error_code or "internal")


def bytes_imported(size: int) -> None:
    emit(BYTES_IMPORTED, MetricUnit.Bytes, size)


def step_duration(step: str, seconds: float) -> None:
    emit(STEP_DURATION, MetricUnit.Seconds, seconds, step=step)


def slot_waited(seconds: float) -> None:
    emit(SLOT_WAIT, MetricUnit.Seconds, max(seconds, 0.0))


def slots(in_use: int, oldest_waiting_seconds: float) -> None:
    emit(SLOTS_IN_USE, MetricUnit.Count, in_use)
    emit(OLDEST_WAITING_TASK_AGE, MetricUnit.Seconds, max(oldest_waiting_seconds, 0.0))


def event_not_published() -> None:
    emit(EVENTS_NOT_PUBLISHED, MetricUnit.Count, 1)


def execution_stopped_by_cancel() -> None:
    emit(EXECUTIONS_STOPPED_BY_CANCEL, MetricUnit.Count, 1)
