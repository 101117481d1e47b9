"""The JSON schemas the API serves at /v2/schemas/task(s) and validates POST bodies with.

The served schema describes exactly what the API returns (clients validate every response
against it); POST validation uses the same schema with additionalProperties false.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.failures import ERROR_CODES
from imagetasks.domain.progress import STEPS as PROGRESS_STEPS
from imagetasks.domain.tasks import TaskStatus

UUID_PATTERN = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
STUB_FIELDS = ("id", "type", "status", "owner", "expires_at", "created_at", "updated_at", "self", "schema")


# The properties a list item leaves out (Glance's partial task schema).
DETAIL_FIELDS = ("input", "result", "message", "error_code", "progress")


def task_properties(task_types: Iterable[str]) -> dict[str, Any]:
    """Glance 2.17's task properties, in its order and words; the types and the message's null are
    this service's (docs/api.md)."""
    return {
        "id": {"description": "An identifier for the task", "pattern": UUID_PATTERN, "type": "string"},
        "type": {
            "description": "The type of task represented by this content",
            "enum": list(task_types),
            "type": "string",
        },
        "status": {
            "description": "The current status of this task",
            "enum": [s.value for s in TaskStatus],
            "type": "string",
        },
        "input": {"description": "The parameters required by task, JSON blob", "type": ["null", "object"]},
        "result": {"description": "The result of current task, JSON blob", "type": ["null", "object"]},
        "owner": {"description": "An identifier for the owner of this task", "type": "string"},
        "message": {
            "description": (
                "Human-readable informative message only included when appropriate (usually on failure)"
            ),
            "type": ["null", "string"],
        },
        "image_id": {"description": "Image associated with the task", "type": "string"},
        "request_id": {"description": "Human-readable informative request-id", "type": "string"},
        "user_id": {"description": "User associated with the task", "type": "string"},
        "expires_at": {
            "description": "Datetime when this resource would be subject to removal",
            "type": ["null", "string"],
        },
        "created_at": {"description": "Datetime when this resource was created", "type": "string"},
        "updated_at": {"description": "Datetime when this resource was updated", "type": "string"},
        "self": {"readOnly": True, "type": "string"},
        "schema": {"readOnly": True, "type": "string"},
        # This service's additions (docs/api.md), after Glance's own properties.
        "error_code": {
            "description": "Why a failed task failed, for programs (the message says it for people)",
            "enum": sorted(ERROR_CODES),
            "type": "string",
        },
        "progress": {
            "description": "How far the running step is; kept once the task ends",
            "type": "object",
            "properties": {
                "step": {
                    "description": (
                        "import: fetch (then download, convert, upload when the cloud converts imports); "
                        "convert, and export to another format: download, convert (bytes of the virtual "
                        "disk gone through), upload; export in the image's format: copy"
                    ),
                    "enum": list(PROGRESS_STEPS),
                    "type": "string",
                },
                "bytes_done": {"type": "integer"},
                "bytes_total": {"type": ["null", "integer"]},
                "percent": {"type": ["null", "integer"]},
            },
        },
    }


def task_schema(task_types: Iterable[str]) -> dict[str, Any]:
    return {"name": "task", "properties": task_properties(task_types)}


def tasks_schema(task_types: Iterable[str]) -> dict[str, Any]:
    """Glance's minimal collection schema: items without the detail fields, only a describedby link
    (a page's `first` and `next` are not among its properties there either)."""
    item = {k: v for k, v in task_properties(task_types).items() if k not in DETAIL_FIELDS}
    return {
        "name": "tasks",
        "properties": {
            "tasks": {"type": "array", "items": {"name": "task", "properties": item}},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "describedby", "href": "{schema}"}],
    }


def validate_create_body(body: dict[str, Any], task_types: Iterable[str]) -> None:
    """Glance's order: `type`, then `input`, then the schema (additionalProperties false)."""
    if "type" not in body:
        raise InvalidRequest("Task 'type' is required")
    if "input" not in body:
        raise InvalidRequest("Task 'input' is required")
    # jsonschema is imported on the first create, not at cold start (it costs ~90 ms to import).
    from jsonschema import Draft4Validator
    from jsonschema.exceptions import best_match

    schema = copy.deepcopy(task_schema(task_types))
    schema["additionalProperties"] = False
    # A task is created with an input object; null is only ever a stored value.
    schema["properties"]["input"]["type"] = "object"
    error = best_match(Draft4Validator(schema).iter_errors(body))
    if error is not None:
        raise InvalidRequest(f"Provided object does not match schema 'task': {error.message}")
