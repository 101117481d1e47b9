"""The JSON schemas the API serves at /v2/schemas/task(s) and validates POST bodies with.

The served schema describes exactly what the API returns (clients validate every response
against it); POST validation uses the same schema with additionalProperties false.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.tasks import TaskStatus

UUID_PATTERN = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
STUB_FIELDS = ("id", "type", "status", "owner", "expires_at", "created_at", "updated_at", "self", "schema")


def task_properties(task_types: Iterable[str]) -> dict[str, Any]:
    return {
        "id": {"type": "string", "description": "An identifier for the task", "pattern": UUID_PATTERN},
        "type": {
            "type": "string",
            "description": "The type of task represented by this content",
            "enum": list(task_types),
        },
        "status": {
            "type": "string",
            "description": "The current status of this task",
            "enum": [s.value for s in TaskStatus],
        },
        "input": {
            "type": ["null", "object"],
            "description": "The parameters required by task, JSON blob",
        },
        "result": {
            "type": ["null", "object"],
            "description": "The result of current task, JSON blob",
        },
        "owner": {"type": "string", "description": "An identifier for the owner of this task"},
        "message": {
            "type": ["null", "string"],
            "description": "Human-readable reason the task failed; null unless the task failed",
        },
        "user_id": {"type": "string", "description": "ID of the user who created the task"},
        "request_id": {"type": "string", "description": "ID of the request that created the task"},
        "image_id": {"type": "string", "description": "ID of the image the task produced or worked on"},
        "expires_at": {
            "type": ["null", "string"],
            "description": "Datetime after which the task is deleted; set when it reaches success or failure",
        },
        "created_at": {"type": "string", "description": "Datetime when this resource was created"},
        "updated_at": {"type": "string", "description": "Datetime when this resource was updated"},
        "self": {"type": "string", "readOnly": True},
        "schema": {"type": "string", "readOnly": True},
    }


def task_schema(task_types: Iterable[str]) -> dict[str, Any]:
    return {"name": "task", "properties": task_properties(task_types)}


def tasks_schema(task_types: Iterable[str]) -> dict[str, Any]:
    properties = task_properties(task_types)
    stub = {name: properties[name] for name in STUB_FIELDS}
    return {
        "name": "tasks",
        "properties": {
            "tasks": {"type": "array", "items": {"name": "task", "properties": stub}},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
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
