"""The /v2/tasks part of the Glance v2 Images API, its schemas, and version discovery."""

import json
import re
import time
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from idempotent_create import create_once, idempotency_config, idempotency_key
from schemas import STUB_FIELDS, task_schema, tasks_schema, validate_create_body

from imagetasks import composition, task_metrics
from imagetasks.adapters.long_polls import LongPollLeases
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.api import console, glance
from imagetasks.api import openapi as openapi_description
from imagetasks.config import settings
from imagetasks.domain import clock
from imagetasks.domain.errors import TooManyLongPolls
from imagetasks.domain.images import check_publicize
from imagetasks.domain.listing import parse_list_request
from imagetasks.domain.long_poll import parse_wait, wait_for_change
from imagetasks.domain.task_view import render
from imagetasks.domain.tasks import TASK_LIST_SPEC, Task, TaskStatus, TaskType
from imagetasks.observability import logger, tracer
from imagetasks.services.tasks import TaskService

app = APIGatewayRestResolver()
glance.install_error_handlers(app)

OFFERED_TYPES = tuple(t.value for t in TaskType)
TASK_PATH = "/v2/tasks"
TASK_ITEM = re.compile(r"/v2/tasks/[^/]+")
DELETE_MESSAGE = (
    "This operation is currently not permitted on Glance Tasks. They are auto deleted after "
    "reaching the time based on their expires_at property."
)
# What a long poll leaves of the function's time for answering (the Lambda timeout is 30 s).
ANSWER_MARGIN_SECONDS = 3.0


@lru_cache(maxsize=1)
def tasks_table() -> TasksTable:
    return composition.tasks_table(settings())


@lru_cache(maxsize=1)
def long_poll_leases() -> LongPollLeases:
    return composition.long_poll_leases(settings())


@lru_cache(maxsize=1)
def task_service() -> TaskService:
    return composition.task_service(settings())


def render_stub(row: dict[str, Any]) -> dict[str, Any]:
    stub = {
        "id": row["task_id"],
        "type": row["type"],
        "status": row["status"],
        "owner": row["owner"],
        "created_at": clock.to_api(clock.from_stored(row["created_at"])),
        "updated_at": clock.to_api(clock.from_stored(row["updated_at"])),
        "self": f"{TASK_PATH}/{row['task_id']}",
        "schema": "/v2/schemas/task",
    }
    if row.get("expires_at") is not None:
        stub["expires_at"] = clock.epoch_to_api(int(row["expires_at"]))
    return {name: stub[name] for name in STUB_FIELDS if name in stub}


# ------------------------------------------------------------------ version discovery
@app.get("/", summary="Version discovery")
@app.get("/versions", summary="Version discovery")
@app.get("/v2", summary="Version discovery")
def versions() -> Response[dict[str, Any]]:
    return glance.json_response(200, glance.versions_document(app, settings().public_base_url))


@app.get("/openapi.json", summary="This API's OpenAPI 3 description")
def openapi() -> Response[str]:
    return Response(200, glance.JSON, json.dumps(openapi_document()))


@app.get(
    "/console",
    summary="The task console: a page that signs in with a token (no token to load it)",
    responses={
        200: {
            "description": "The console's HTML page",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    },
)
def task_console() -> Response[str]:
    served = console.page()
    return Response(200, "text/html; charset=utf-8", served.html, headers=dict(served.headers))


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """Powertools' description of the routes, completed with the task schemas the routes serve:
    the create body (one shape per offered task type) and the task returned."""
    document: dict[str, Any] = json.loads(app.get_openapi_json_schema(title="imagetasks", version="2.17"))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["TaskCreate"] = openapi_description.task_create_schema(settings())
    schemas["Task"] = task_schema(OFFERED_TYPES)
    schemas["Tasks"] = tasks_schema(OFFERED_TYPES)
    task_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Task"}}}
    post = document["paths"][TASK_PATH]["post"]
    post["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskCreate"}}},
    }
    post["responses"]["201"] = {"description": "The new task, pending", "content": task_ref}
    document["paths"][f"{TASK_PATH}/{{task_id}}"]["get"]["responses"]["200"] = {
        "description": "The task",
        "content": task_ref,
    }
    document["paths"][TASK_PATH]["get"]["responses"]["200"] = {
        "description": "A page of task stubs",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Tasks"}}},
    }
    statuses = [s.value for s in TaskStatus]
    return openapi_description.complete(
        document,
        settings(),
        openapi_description.task_list_parameters(TASK_LIST_SPEC.sort_keys, statuses, list(OFFERED_TYPES)),
    )


# ------------------------------------------------------------------ tasks
@app.post(TASK_PATH, summary="Create a task", responses={201: {"description": "The new task, pending"}})
@tracer.capture_method
def create_task() -> Response[dict[str, Any]]:
    caller = glance.current_caller(app)
    event = app.current_event
    key = idempotency_key(event.headers, event.multi_value_headers)
    body = glance.json_body(app)
    validate_create_body(body, OFFERED_TYPES)
    properties = body["input"].get("image_properties") if isinstance(body["input"], dict) else None
    if isinstance(properties, dict):  # an import makes its image as the caller would
        check_publicize(properties.get("visibility"), caller.is_admin)

    def create() -> Task:
        return task_service().create(
            TaskType(body["type"]),
            body["input"],
            caller.project_id,
            user_id=caller.user_id or None,
            request_id=glance.request_id(app),
        )

    task, replayed = (
        (create(), False)
        if key is None
        else create_once(caller.project_id, key, body, create, unexpired_task)
    )
    if replayed:
        # The same key and body again: the first request's task, answered as the first was (201).
        logger.info("Task create replayed", extra={"task_id": task.id, "owner": task.owner})
    else:
        task_metrics.task_created(task.type.value)
        logger.info("Task created", extra={"task_id": task.id, "type": task.type.value, "owner": task.owner})
    location = f"{glance.base_url(app, settings().public_base_url)}{TASK_PATH}/{task.id}"
    return glance.json_response(201, render(task), {"Location": location})


@app.get(TASK_PATH, summary="List tasks")
@tracer.capture_method
def list_tasks() -> Response[dict[str, Any]]:
    caller = glance.current_caller(app)
    params = dict(app.current_event.query_string_parameters or {})
    request = parse_list_request(
        params,
        TASK_LIST_SPEC,
        {"status": [s.value for s in TaskStatus], "type": OFFERED_TYPES},
        app.current_event.multi_value_query_string_parameters or {},
    )
    rows = tasks_table().list(caller, request, clock.now())
    next_marker = rows[-1]["task_id"] if rows and len(rows) == request.limit else None
    links = glance.page_links(TASK_PATH, params, next_marker)
    body = {"tasks": [render_stub(row) for row in rows], **links, "schema": "/v2/schemas/tasks"}
    return glance.json_response(200, body)


@app.route(TASK_PATH, method=["PUT", "PATCH", "DELETE"], include_in_schema=False)
def tasks_other_methods() -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET, POST")


@app.get(f"{TASK_PATH}/<task_id>", summary="Show a task")
@tracer.capture_method
def show_task(task_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(app)
    wait = parse_wait((app.current_event.query_string_parameters or {}).get("wait"))

    def read() -> Task:
        return tasks_table().get_visible(task_id, caller, clock.now())

    if wait is None:
        return glance.json_response(200, render(read()))
    budget = min(wait, app.lambda_context.get_remaining_time_in_millis() / 1000 - ANSWER_MARGIN_SECONDS)
    # Each poll holds a function for its wait: a project may hold only so many at once.
    lease = long_poll_leases().acquire(caller.project_id, time.time(), budget)
    if lease is None:
        raise TooManyLongPolls(
            f"Project {caller.project_id} already has {long_poll_leases().limit} long polls open; "
            "poll again shortly, or without wait."
        )
    try:
        return glance.json_response(200, render(wait_for_change(read, budget, sleep=pause)))
    finally:
        long_poll_leases().release(lease)


def pause(seconds: float) -> None:
    """The long poll's wait between two reads (a module function, so tests can drive it)."""
    time.sleep(seconds)


def unexpired_task(task_id: str) -> Task | None:
    task = tasks_table().get(task_id)
    return task if task is not None and not task.is_expired(clock.now()) else None


@app.delete(f"{TASK_PATH}/<task_id>", summary="Tasks cannot be deleted (405)")
def delete_task(task_id: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET", DELETE_MESSAGE)


@app.route(f"{TASK_PATH}/<task_id>", method=["PUT", "PATCH", "POST"], include_in_schema=False)
def task_other_methods(task_id: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET")


@app.not_found
def no_route(error: Exception) -> Response[Any]:
    """Powertools matches a path parameter of URI-safe characters only, so a task id with others (a
    control character, `£`) reaches no route; deleting it is still the 405 Glance and /openapi.json say."""
    event = app.current_event
    if event.http_method == "DELETE" and TASK_ITEM.fullmatch(event.path):
        refusal = glance.method_not_allowed("GET", DELETE_MESSAGE)
        return glance.error_response(refusal.status, refusal.message, refusal.headers)
    return glance.error_response(404, "The resource could not be found.")


# ------------------------------------------------------------------ schemas
@app.post(
    f"{TASK_PATH}/<task_id>/actions/cancel",
    summary="Cancel a pending or processing task",
    responses={
        202: {"description": "Cancelling: the task ends in failure with error_code cancelled"},
        404: {"description": "No such task in the caller's project"},
        409: {"description": "The task already ended"},
    },
)
@tracer.capture_method
def cancel_task(task_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(app)
    task = task_service().cancel(task_id, caller, clock.now())
    logger.info("Task cancel requested", extra={"task_id": task_id, "by": caller.user_id})
    return glance.json_response(202, render(task))


@app.route(
    f"{TASK_PATH}/<task_id>/actions/cancel", method=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
def cancel_other_methods(task_id: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("POST")


@app.get("/v2/schemas/task", summary="The task schema")
def get_task_schema() -> Response[dict[str, Any]]:
    glance.current_caller(app)
    return glance.json_response(200, task_schema(OFFERED_TYPES))


@app.get("/v2/schemas/tasks", summary="The task list schema")
def get_tasks_schema() -> Response[dict[str, Any]]:
    glance.current_caller(app)
    return glance.json_response(200, tasks_schema(OFFERED_TYPES))


@app.route("/v2/schemas/<name>", method=["PUT", "PATCH", "POST", "DELETE"], include_in_schema=False)
def schema_other_methods(name: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # An idempotency record left "in progress" by an invocation that timed out frees its key when
    # that invocation's time is up, not after the record's 24 hours.
    idempotency_config().register_lambda_context(context)
    return glance.resolve(app, event, context, settings().cors_allow_origin)
