"""The container runner's entrypoint: one workflow step of one task, run outside Lambda.

    python -m imagetasks.entrypoints.worker

The workflow starts it (an ECS RunTask on Fargate; locally a subprocess or a container) when the
step's Lambda function found the work too large for Lambda (`NeedsContainer`). It runs the same
step code as the Lambda function, with this runner's limits (`RUNNER=container`), and reads:

- ``STEP``: fetch, register (import), convert or export;
- ``TASK_ID``: the task;
- ``STEP_INPUT``: the step's input as JSON (register's staged data; ``{}`` otherwise);
- ``STEP_TIMEOUT_SECONDS``: how long the workflow waits for it (the conversion's time budget).

An ECS task has no output, so the outcome, a result or an error shaped as Step Functions shows a
Lambda error ({"Error", "Cause"}), is written to the task's item, where the workflow reads it
next. Temporary errors are retried here, as the workflow retries them for a Lambda step. The exit
status is 0 once an outcome is recorded (the workflow decides from it), 1 if even that failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from imagetasks import composition
from imagetasks.adapters.dynamo import TransientError
from imagetasks.config import Settings, settings
from imagetasks.domain.failures import TASK_FAILURE, failure
from imagetasks.domain.import_errors import TransientImportError
from imagetasks.domain.runners import CONTAINER
from imagetasks.entrypoints.steps import processing_step
from imagetasks.observability import logger

#: Attempts at a step that keeps failing with temporary errors, and the first pause between them.
ATTEMPTS = 3
FIRST_PAUSE_SECONDS = 5.0
DEFAULT_TIMEOUT_SECONDS = 6 * 3600

StepRunner = Callable[[Settings, str, dict[str, Any], float], dict[str, Any]]


def _fetch(config: Settings, task_id: str, step_input: dict[str, Any], seconds: float) -> dict[str, Any]:
    return composition.import_task(config).fetch(task_id)


def _register(config: Settings, task_id: str, step_input: dict[str, Any], seconds: float) -> dict[str, Any]:
    return composition.import_task(config).register(task_id, step_input, seconds)


def _convert(config: Settings, task_id: str, step_input: dict[str, Any], seconds: float) -> dict[str, Any]:
    return composition.conversion_service(config).convert(task_id, seconds)


def _export(config: Settings, task_id: str, step_input: dict[str, Any], seconds: float) -> dict[str, Any]:
    return composition.conversion_service(config).export(task_id, seconds)


STEPS: dict[str, StepRunner] = {
    "fetch": _fetch,
    "register": _register,
    "convert": _convert,
    "export": _export,
}


@processing_step
def run_step(
    config: Settings, step: str, task_id: str, step_input: dict[str, Any], seconds: float
) -> dict[str, Any]:
    runner = STEPS.get(step)
    if runner is None:
        raise failure("invalid_input", f"This deployment's container runner has no step named {step!r}")
    return runner(config, task_id, step_input, seconds)


def error_outcome(error: Exception) -> dict[str, str]:
    """The error as Step Functions shows a Lambda step's: the class name and a JSON cause."""
    name = type(error).__name__
    if not name.startswith(TASK_FAILURE) and not isinstance(error, (TransientError, TransientImportError)):
        # A fault of ours: its text stays in the log; the task's message says so in general terms.
        return {
            "Error": "imagetasks.WorkerError",
            "Cause": json.dumps({"errorType": "imagetasks.WorkerError"}),
        }
    return {"Error": name, "Cause": json.dumps({"errorType": name, "errorMessage": str(error)})}


def run(environ: Mapping[str, str], pause: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Run the step the environment names; its outcome ({"step", "result"} or {"step", "error"})."""
    step = environ.get("STEP", "")
    task_id = environ.get("TASK_ID", "")
    step_input = json.loads(environ.get("STEP_INPUT") or "{}")
    seconds = float(environ.get("STEP_TIMEOUT_SECONDS") or DEFAULT_TIMEOUT_SECONDS)
    config = settings().model_copy(update={"runner": CONTAINER})
    logger.append_keys(task_id=task_id, step=step, runner=CONTAINER)
    started = time.monotonic()
    wait = FIRST_PAUSE_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        try:
            left = seconds - (time.monotonic() - started)
            result = run_step(config, step, task_id, step_input, left)
            return {"step": step, "result": result}
        except (TransientError, TransientImportError) as busy:
            if attempt == ATTEMPTS:
                return {"step": step, "error": error_outcome(busy)}
            logger.warning("Temporary error; trying again", extra={"attempt": attempt, "error": str(busy)})
            pause(wait)
            wait *= 2
        except Exception as error:
            if not type(error).__name__.startswith(TASK_FAILURE):
                logger.exception("The step failed with an internal error")
            return {"step": step, "error": error_outcome(error)}
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    outcome = run(environ)
    try:
        tasks = composition.tasks_table(settings())
        tasks.record_runner_outcome(environ.get("TASK_ID", ""), outcome)
    except Exception:
        logger.exception("Could not record the step's outcome")
        return 1
    logger.info("Step finished in the container runner", extra={"failed": "error" in outcome})
    return 0


if __name__ == "__main__":
    sys.exit(main())
