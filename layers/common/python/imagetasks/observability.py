"""Logger and tracer shared by every function (a neutral module: the domain may import it)."""

import json
import logging
from typing import Any

from aws_lambda_powertools import Logger, Tracer


def _ascii_json(record: Any) -> str:
    """A log line as ASCII JSON. Logs quote what users send (an import URL, a file name), and a
    lone surrogate in it (`\\udcff`) cannot be written as UTF-8: Powertools' own serializer
    (`ensure_ascii=False`) would make the write fail and lose the line. Escaped, it stays readable
    to CloudWatch Logs Insights and to any JSON reader."""
    return json.dumps(record, default=str, separators=(",", ":"), ensure_ascii=True)


logger = Logger(json_serializer=_ascii_json)
tracer = Tracer()
# Metrics: imagetasks.task_metrics (each written at once, with its own dimensions).

# The tracer logs every exception that leaves a traced method as an ERROR with its traceback: a
# refused request (a 400 the API answers on purpose) would read as a fault, and the traceback
# quotes the user's input as is. Unexpected errors are logged by the API's and the steps' own
# handlers (`logger.exception`, in JSON); the tracer still records exceptions in X-Ray.
logging.getLogger("aws_lambda_powertools.tracing.tracer").setLevel(logging.CRITICAL)
