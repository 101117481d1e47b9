"""The /v2/tasks contract, through the real handler with DynamoDB and Step Functions on moto."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import boto3
import pytest

from tests.support import (
    IMPORT_INPUT,
    ROOT,
    api_event,
    call,
    create_task,
    header,
    load_handler,
    query_of,
)

#: The release the repository says it is (VERSION); GET /versions must show the same.
SERVICE_VERSION = (ROOT / "VERSION").read_text(encoding="utf-8").strip()

TASK_ID = "3f0c3c7e-9a47-4d55-8f55-5d2f0a2b6d11"


def stored_item_count(aws: dict[str, str]) -> int:
    return boto3.client("dynamodb").scan(TableName=aws["TASKS_TABLE"], Select="COUNT")["Count"]


# ------------------------------------------------------------------ create
def test_create_returns_pending_task_with_location_and_starts_its_execution(
    api: Any, aws: dict[str, str]
) -> None:
    response = call(api, api_event("POST", "/v2/tasks", body={"type": "import", "input": IMPORT_INPUT}))

    task = response["json"]
    assert response["statusCode"] == 201
    assert task["status"] == "pending" and task["type"] == "import" and task["owner"] == "project-a"
    assert task["input"] == IMPORT_INPUT and task["result"] is None and task["message"] is None
    assert task["self"] == f"/v2/tasks/{task['id']}" and task["schema"] == "/v2/schemas/task"
    assert (
        header(response, "Location")
        == f"https://abcdef1234.execute-api.us-east-1.amazonaws.com/v1/v2/tasks/{task['id']}"
    )
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "x-openstack-request-id") == "req-8d2b2a1c-4d52-4b0a-9d6f-1f2e3d4c5b6a"
    assert len(task["created_at"]) == 20 and task["created_at"].endswith("Z")
    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=aws["STATE_MACHINE_ARN"])[
        "executions"
    ]
    assert [e["name"] for e in executions] == [task["id"]]


def test_starting_the_same_task_twice_runs_one_execution(api: Any, aws: dict[str, str]) -> None:
    task = create_task(api)

    api.task_service().workflow.start(task["id"], "import")

    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=aws["STATE_MACHINE_ARN"])[
        "executions"
    ]
    assert len(executions) == 1


@pytest.mark.parametrize(
    ("raw_body", "message"),
    [
        (None, "Body expected in request."),
        ("{not json", "Malformed JSON in request body."),
        ("42", "Unexpected body type. Expected list/dict."),
        ('"text"', "Unexpected body type. Expected list/dict."),
        (json.dumps({"input": IMPORT_INPUT}), "Task 'type' is required"),
        (json.dumps({"type": "import"}), "Task 'input' is required"),
        (
            json.dumps({"type": "bogus", "input": {}}),
            "Provided object does not match schema 'task': 'bogus' is not one of",
        ),
        (
            json.dumps({"type": "import", "input": "x"}),
            "Provided object does not match schema 'task': 'x' is not of type 'object'",
        ),
        (
            json.dumps({"type": "import", "input": {}, "extra": 1}),
            "Provided object does not match schema 'task': Additional properties are not allowed",
        ),
        (
            json.dumps({"type": "import", "input": {}, "status": "done"}),
            "Provided object does not match schema 'task': 'done' is not one of",
        ),
        (json.dumps({"type": "import", "input": {}}), "Invalid location: None"),
        (
            json.dumps({"type": "import", "input": {**IMPORT_INPUT, "import_from": ""}}),
            "Invalid location: None",
        ),
        (
            json.dumps({"type": "import", "input": {**IMPORT_INPUT, "import_from": "file:///etc/passwd"}}),
            "File based imports are not allowed. Please use a non-local source of image data.",
        ),
        (
            json.dumps(
                {"type": "import", "input": {**IMPORT_INPUT, "import_from": "filesystem:///etc/passwd"}}
            ),
            "File based imports are not allowed. Please use a non-local source of image data.",
        ),
        (
            json.dumps({"type": "import", "input": {**IMPORT_INPUT, "import_from": "swift"}}),
            "The given uri is not valid. Please specify a valid uri from the following list of supported uri",
        ),
        (
            json.dumps({"type": "import", "input": {**IMPORT_INPUT, "import_from": "vsphere"}}),
            "The given uri is not valid. Please specify a valid uri from the following list of supported uri",
        ),
        (
            json.dumps(
                {"type": "import", "input": {**IMPORT_INPUT, "import_from": "ftp://example.invalid/a.img"}}
            ),
            "The given uri is not valid. Please specify a valid uri from the following list of supported uri",
        ),
        (
            json.dumps(
                {
                    "type": "import",
                    "input": {**IMPORT_INPUT, "import_from": "http://169.254.169.254/latest/meta-data"},
                }
            ),
            "URI for legacy import task does not pass filtering: http://169.254.169.254/latest/meta-data",
        ),
        (
            json.dumps(
                {
                    "type": "import",
                    "input": {**IMPORT_INPUT, "import_from": "http://93.184.216.34:8080/a.img"},
                }
            ),
            "URI for legacy import task does not pass filtering",
        ),
        (
            json.dumps(
                {
                    "type": "import",
                    "input": {k: v for k, v in IMPORT_INPUT.items() if k != "import_from_format"},
                }
            ),
            "Input does not contain 'import_from_format' field",
        ),
        (
            json.dumps(
                {
                    "type": "import",
                    "input": {k: v for k, v in IMPORT_INPUT.items() if k != "image_properties"},
                }
            ),
            "Input does not contain 'image_properties' field",
        ),
        (
            json.dumps(
                {
                    "type": "import",
                    "input": {
                        **IMPORT_INPUT,
                        "image_properties": {"disk_format": "floppy", "container_format": "bare"},
                    },
                }
            ),
            "Invalid disk_format 'floppy'",
        ),
        (
            json.dumps({"type": "import", "input": {**IMPORT_INPUT, "import_from_format": "raw"}}),
            "differ, and this cloud does not convert images on import",
        ),
        (
            json.dumps({"type": "import", "input": {**IMPORT_INPUT, "checksum": "nothex"}}),
            "checksum must be the image's md5",
        ),
    ],
)
def test_bad_create_bodies_are_400_with_glance_text_and_write_nothing(
    api: Any, aws: dict[str, str], raw_body: str | None, message: str
) -> None:
    event = api_event("POST", "/v2/tasks")
    event["body"] = raw_body

    response = call(api, event)

    assert response["statusCode"] == 400
    assert response["json"]["error"]["code"] == 400
    assert response["json"]["error"]["title"] == "Bad Request"
    assert message in response["json"]["error"]["message"], response["json"]
    assert stored_item_count(aws) == 0


def test_valid_read_only_fields_in_the_body_are_ignored(api: Any) -> None:
    body = {
        "type": "import",
        "input": IMPORT_INPUT,
        "status": "success",
        "id": TASK_ID,
        "owner": "someone-else",
    }

    response = call(api, api_event("POST", "/v2/tasks", body=body))

    assert response["statusCode"] == 201
    assert response["json"]["status"] == "pending"
    assert response["json"]["id"] != TASK_ID and response["json"]["owner"] == "project-a"


def test_body_over_256_kibibytes_is_413(api: Any, aws: dict[str, str]) -> None:
    body = {"type": "import", "input": {**IMPORT_INPUT, "padding": "x" * (256 * 1024)}}

    response = call(api, api_event("POST", "/v2/tasks", body=body))

    assert response["statusCode"] == 413
    assert response["json"]["error"]["code"] == 413
    assert stored_item_count(aws) == 0


def test_s3_import_must_be_in_the_callers_own_prefix(api: Any, aws: dict[str, str]) -> None:
    bucket = aws["UPLOADS_BUCKET"]
    other = {**IMPORT_INPUT, "import_from": f"s3://{bucket}/uploads/project-b/disk.qcow2"}
    own = {**IMPORT_INPUT, "import_from": f"s3://{bucket}/uploads/project-a/disk.qcow2"}
    elsewhere = {**IMPORT_INPUT, "import_from": "s3://somebody-elses-bucket/uploads/project-a/disk.qcow2"}

    refused = call(api, api_event("POST", "/v2/tasks", body={"type": "import", "input": other}))
    refused_bucket = call(api, api_event("POST", "/v2/tasks", body={"type": "import", "input": elsewhere}))
    accepted = call(api, api_event("POST", "/v2/tasks", body={"type": "import", "input": own}))

    assert refused["statusCode"] == 400 and refused_bucket["statusCode"] == 400
    assert accepted["statusCode"] == 201, accepted["body"]


# ------------------------------------------------------------------ show
def test_show_returns_the_full_task(api: Any) -> None:
    task = create_task(api)

    response = call(api, api_event("GET", f"/v2/tasks/{task['id']}"))

    assert response["statusCode"] == 200
    assert response["json"] == task


def test_show_of_unknown_or_other_projects_task_is_404_never_403(api: Any) -> None:
    task = create_task(api, project="project-a")

    other = call(api, api_event("GET", f"/v2/tasks/{task['id']}", project="project-b"))
    unknown = call(api, api_event("GET", f"/v2/tasks/{TASK_ID}"))
    admin = call(api, api_event("GET", f"/v2/tasks/{task['id']}", project="admin-project", roles="admin"))

    assert other["statusCode"] == 404
    assert other["json"]["error"]["message"] == f"Could not find task {task['id']}"
    assert unknown["statusCode"] == 404
    assert admin["statusCode"] == 200


def test_an_expired_task_is_invisible_before_ttl_deletes_it(api: Any, aws: dict[str, str]) -> None:
    task = create_task(api)
    boto3.client("dynamodb").update_item(
        TableName=aws["TASKS_TABLE"],
        Key={"id": {"S": task["id"]}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 5)}},
    )
    # The list index rows carry expires_at too; the lifecycle writes both together.
    for row in boto3.client("dynamodb").scan(TableName=aws["TASKS_TABLE"])["Items"]:
        if row["id"]["S"].startswith(f"{task['id']}#"):
            boto3.client("dynamodb").update_item(
                TableName=aws["TASKS_TABLE"],
                Key={"id": row["id"]},
                UpdateExpression="SET expires_at = :past",
                ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 5)}},
            )

    shown = call(api, api_event("GET", f"/v2/tasks/{task['id']}"))
    listed = call(api, api_event("GET", "/v2/tasks"))

    assert shown["statusCode"] == 404
    assert listed["json"]["tasks"] == []


def test_delete_is_405_with_allow_get(api: Any) -> None:
    task = create_task(api)

    response = call(api, api_event("DELETE", f"/v2/tasks/{task['id']}"))

    assert response["statusCode"] == 405
    assert header(response, "Allow") == "GET"
    assert response["json"]["error"]["message"].startswith(
        "This operation is currently not permitted on Glance Tasks."
    )


@pytest.mark.parametrize("task_id", ["^l\x1df\r\x85", "a\nb", "\u00e7\u00a3"])
def test_delete_is_405_whatever_characters_the_id_has(api: Any, task_id: str) -> None:
    # The router matches ids of URI-safe characters only; the rest used to miss it and be a 404
    # (schemathesis, issue 14), where /openapi.json and Glance say 405.
    response = call(api, api_event("DELETE", f"/v2/tasks/{task_id}"))

    assert response["statusCode"] == 405
    assert header(response, "Allow") == "GET"
    assert response["json"]["error"]["message"].startswith(
        "This operation is currently not permitted on Glance Tasks."
    )


def test_an_id_the_router_cannot_match_is_still_404_on_get(api: Any) -> None:
    response = call(api, api_event("GET", "/v2/tasks/a\nb"))

    assert response["statusCode"] == 404


def test_unsupported_method_on_the_collection_is_405(api: Any) -> None:
    response = call(api, api_event("PUT", "/v2/tasks", body={}))

    assert response["statusCode"] == 405
    assert header(response, "Allow") == "GET, POST"


def test_missing_caller_identity_is_401(api: Any) -> None:
    response = call(api, api_event("GET", "/v2/tasks", authorized=False))

    assert response["statusCode"] == 401
    assert response["json"]["error"]["code"] == 401


def test_forged_identity_headers_change_nothing(api: Any) -> None:
    task = create_task(api, project="project-a")

    response = call(
        api,
        api_event(
            "GET",
            f"/v2/tasks/{task['id']}",
            project="project-b",
            headers={"X-Project-Id": "project-a", "X-Roles": "admin", "X-User-Id": "root"},
        ),
    )

    assert response["statusCode"] == 404


# ------------------------------------------------------------------ list
def test_list_order_and_paging_follow_the_contract_example(api: Any) -> None:
    t0, t1, t2 = (create_task(api)["id"] for _ in range(3))

    default = call(api, api_event("GET", "/v2/tasks"))
    first_page = call(api, api_event("GET", "/v2/tasks", query={"limit": "2"}))
    after_t2 = call(api, api_event("GET", "/v2/tasks", query={"marker": t2}))

    assert [t["id"] for t in default["json"]["tasks"]] == [t2, t1, t0]
    assert "next" not in default["json"]
    assert [t["id"] for t in first_page["json"]["tasks"]] == [t2, t1]
    assert default["json"]["first"] == "/v2/tasks"  # Glance echoes the request, not its defaults
    assert first_page["json"]["first"] == "/v2/tasks?limit=2"
    assert first_page["json"]["next"] == f"/v2/tasks?limit=2&marker={t1}"
    assert first_page["json"]["schema"] == "/v2/schemas/tasks"
    assert [t["id"] for t in after_t2["json"]["tasks"]] == [t1, t0]


def test_list_stubs_have_only_the_stub_fields(api: Any) -> None:
    create_task(api)

    stub = call(api, api_event("GET", "/v2/tasks"))["json"]["tasks"][0]

    assert set(stub) == {"id", "type", "status", "owner", "created_at", "updated_at", "self", "schema"}


def test_following_next_links_walks_every_task_once(api: Any) -> None:
    created = [create_task(api)["id"] for _ in range(7)]
    seen: list[str] = []
    query: dict[str, str] = {"limit": "3", "sort_dir": "asc"}

    while True:
        page = call(api, api_event("GET", "/v2/tasks", query=query))["json"]
        seen += [t["id"] for t in page["tasks"]]
        if "next" not in page:
            break
        query = query_of(page["next"])

    assert seen == created


def test_limit_zero_is_an_empty_page_and_limit_is_capped(api: Any) -> None:
    create_task(api)

    empty = call(api, api_event("GET", "/v2/tasks", query={"limit": "0"}))
    capped = call(api, api_event("GET", "/v2/tasks", query={"limit": "5000"}))

    assert empty["statusCode"] == 200 and empty["json"]["tasks"] == [] and "next" not in empty["json"]
    assert len(capped["json"]["tasks"]) == 1
    assert query_of(capped["json"]["first"])["limit"] == "5000"  # the request's own value, as Glance


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "ten"}, "limit param must be an integer"),
        ({"limit": "-1"}, "limit param must be positive"),
        ({"marker": "not-a-uuid"}, "Invalid marker format"),
        ({"marker": TASK_ID}, f"Task with the given id {TASK_ID} was not found"),
        ({"sort_dir": "up"}, "Invalid sort direction: up"),
        ({"sort_key": "name"}, "Sort key supplied was not valid."),
        ({"status": "done"}, "Invalid status value: done"),
        ({"type": "copy"}, "Invalid type value: copy"),
    ],
)
def test_bad_list_parameters_are_400(api: Any, query: dict[str, str], message: str) -> None:
    response = call(api, api_event("GET", "/v2/tasks", query=query))

    assert response["statusCode"] == 400
    assert response["json"]["error"]["message"] == message


def test_a_marker_from_another_project_is_refused(api: Any) -> None:
    foreign = create_task(api, project="project-b")["id"]

    response = call(api, api_event("GET", "/v2/tasks", query={"marker": foreign}, project="project-a"))

    assert response["statusCode"] == 400
    assert response["json"]["error"]["message"] == f"Task with the given id {foreign} was not found"


def test_members_see_their_project_and_admins_see_all_and_filter_by_owner(api: Any) -> None:
    a = create_task(api, project="project-a")["id"]
    b = create_task(api, project="project-b")["id"]

    member = call(api, api_event("GET", "/v2/tasks", project="project-a"))["json"]["tasks"]
    member_asks_owner_b = call(
        api, api_event("GET", "/v2/tasks", project="project-a", query={"owner": "project-b"})
    )["json"]["tasks"]
    admin_all = call(api, api_event("GET", "/v2/tasks", project="admin", roles="admin"))["json"]["tasks"]
    admin_b = call(
        api, api_event("GET", "/v2/tasks", project="admin", roles="admin", query={"owner": "project-b"})
    )["json"]["tasks"]

    assert [t["id"] for t in member] == [a]
    assert member_asks_owner_b == []
    assert [t["id"] for t in admin_all] == [b, a]
    assert [t["id"] for t in admin_b] == [b]


# ------------------------------------------------------------------ schemas, versions, openapi
def test_task_schema_describes_every_field_with_enums(api: Any) -> None:
    schema = call(api, api_event("GET", "/v2/schemas/task"))["json"]

    properties = schema["properties"]
    assert schema["name"] == "task" and "additionalProperties" not in schema
    assert properties["type"]["enum"] == ["import", "export", "convert"]
    assert properties["status"]["enum"] == ["pending", "processing", "success", "failure"]
    assert properties["input"]["type"] == ["null", "object"] and properties["result"]["type"] == [
        "null",
        "object",
    ]
    assert properties["message"]["type"] == ["null", "string"] and properties["expires_at"]["type"] == [
        "null",
        "string",
    ]
    assert properties["self"] == {"type": "string", "readOnly": True}
    assert all("description" in p for name, p in properties.items() if name not in ("self", "schema"))


def test_tasks_schema_lists_stub_properties_and_describedby(api: Any) -> None:
    schema = call(api, api_event("GET", "/v2/schemas/tasks"))["json"]

    assert schema["name"] == "tasks"
    assert set(schema["properties"]["tasks"]["items"]["properties"]) == {
        "id",
        "type",
        "status",
        "owner",
        "image_id",
        "request_id",
        "user_id",
        "expires_at",
        "created_at",
        "updated_at",
        "self",
        "schema",
    }
    assert set(schema["properties"]) == {"tasks", "schema"}  # Glance's minimal collection: no first/next
    assert schema["links"] == [{"rel": "describedby", "href": "{schema}"}]


@pytest.mark.parametrize("path", ["/", "/versions", "/v2"])
def test_version_discovery_needs_no_identity(api: Any, path: str) -> None:
    response = call(api, api_event("GET", path, authorized=False))

    assert response["statusCode"] == 200
    current = response["json"]["versions"][0]
    assert current["id"] == "v2.17" and current["status"] == "CURRENT"
    assert current["links"][0]["href"].endswith("/v1/v2/")
    assert response["json"]["service"] == {"name": "imagetasks", "version": SERVICE_VERSION}


def test_openapi_document_and_routes_agree(api: Any, local_template: Any) -> None:
    document = call(api, api_event("GET", "/openapi.json", authorized=False))["json"]

    documented = {
        (path, method.upper())
        for path, ops in document["paths"].items()
        for method in ops
        if method != "parameters"
    }
    template_paths = {
        route.path
        for route in local_template.routes
        if route.function_logical_id in ("TasksApiFunction", "ImagesApiFunction")
    }
    handler_routes = set(_resolver_routes(api)) | set(_resolver_routes(load_handler("images_api")))
    assert documented == handler_routes
    assert {path for path, _ in documented} <= {p.rstrip("/") or "/" for p in template_paths}
    assert document["components"]["securitySchemes"]["X-Auth-Token"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Auth-Token",
        "description": "A Keystone token",
    }
    assert list(document["paths"]["/v2/tasks/{task_id}"]["delete"]["responses"]) == ["405", "401", "403"]
    assert document["paths"]["/versions"]["get"]["security"] == []
    assert {p["name"] for p in document["paths"]["/v2/tasks"]["get"]["parameters"]} >= {
        "limit",
        "marker",
        "id",
    }
    assert ("/v2/tasks", "POST") in documented and ("/v2/tasks/{task_id}", "GET") in documented
    create = document["components"]["schemas"]["TaskCreate"]
    assert sorted(shape["properties"]["type"]["enum"][0] for shape in create["oneOf"]) == [
        "convert",
        "export",
        "import",
    ]
    assert document["paths"]["/v2/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskCreate"
    }


def test_openapi_document_lists_every_image_list_filter_and_the_image_statuses(api: Any) -> None:
    from imagetasks.domain.image_listing import RESERVED

    # Given the served document
    document = call(api, api_event("GET", "/openapi.json", authorized=False))["json"]
    paths = document["paths"]

    # Then every query parameter the image list reads is described, and extra properties are named
    listed = paths["/v2/images"]["get"]
    assert {parameter["name"] for parameter in listed["parameters"]} == set(RESERVED)
    assert "--property-filter" in listed["description"]
    # And the statuses the images routes really answer besides their success are listed
    assert {"204", "302", "404"} <= set(paths["/v2/images/{image_id}/file"]["get"]["responses"])
    assert "413" in paths["/v2/images/{image_id}/import"]["post"]["responses"]
    assert "413" in paths["/v2/images"]["post"]["responses"]


def _resolver_routes(api: Any) -> list[tuple[str, str]]:
    routes = []
    for route in api.app._static_routes + api.app._dynamic_routes:
        if route.include_in_schema:
            routes.append((route.openapi_path, route.method.upper()))
    return routes


# ------------------------------------------------------------------ hostile input
# Every item of the outside review: a clear 4xx that says what to fix, nothing stored, never a 5xx.
LOOPBACK_INPUT = {**IMPORT_INPUT, "import_from": "http://127.0.0.1/images/cirros.qcow2"}


@pytest.fixture
def loopback_api(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The handler with loopback sources allowed, so that checks after the import filter are reached
    without naming a real host."""
    monkeypatch.setenv("IMPORT_ALLOW_LOOPBACK", "true")
    module = load_handler("tasks_api")
    module.tasks_table.cache_clear()
    module.task_service.cache_clear()
    return module


def post_raw(api: Any, raw: str, *, base64_encoded: bool = False) -> dict[str, Any]:
    event = api_event("POST", "/v2/tasks")
    event["body"] = raw
    event["isBase64Encoded"] = base64_encoded
    return call(api, event)


def assert_refused(response: dict[str, Any], status: int, message: str) -> None:
    assert response["statusCode"] == status, response["body"][:500]
    error = response["json"]["error"]
    assert error["code"] == status and error["title"] and message in error["message"], error
    assert "Traceback" not in response["body"]


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://" + "a" * 64 + ".invalid/x", "is not a valid DNS name"),
        ("http://a..b/x", "The host name in http://a..b/x is not a valid DNS name"),
        ("http://\udcff\u2028junk.invalid/x", "(a lone surrogate at position 7)"),
        ("http://x\u0000y.invalid/x", "(a control character at position 8)"),
        ("http://[::1/x", "The given uri is not a valid URL"),
        ("http://127.0.0.1:0/x", "The port in http://127.0.0.1:0/x is not valid"),
        ("http://127.0.0.1:00/x", "The port in http://127.0.0.1:00/x is not valid"),
        ("http://127.0.0.1:080/x", "is not valid: give a number from 1 to 65535"),
        ("http://127.0.0.1:80:80/x", "The host and port in http://127.0.0.1:80:80/x are not valid"),
        ("http://127.0.0.1/x\r\nHost: a.invalid", "(a control character at position 18)"),
        ("http://127.0.0.1/\udc80", "(a lone surrogate at position 17)"),
    ],
    # ASCII ids: a lone surrogate in a test id cannot cross to a pytest-xdist worker.
    ids=[
        "long-label",
        "empty-label",
        "surrogate",
        "nul",
        "bracket",
        "port-0",
        "port-00",
        "port-080",
        "two-ports",
        "crlf",
        "surrogate-in-path",
    ],
)
def test_locations_the_resolver_or_socket_cannot_take_are_400(
    loopback_api: Any, aws: dict[str, str], location: str, message: str
) -> None:
    # json.dumps escapes the lone surrogate, as a client sending it would have to
    response = post_raw(
        loopback_api, json.dumps({"type": "import", "input": {**IMPORT_INPUT, "import_from": location}})
    )

    assert_refused(response, 400, message)
    assert stored_item_count(aws) == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[" * 2000 + "]" * 2000, "nests JSON objects or arrays deeper than 32 levels"),
        ('{"type": "import", "input": ' + '{"a": ' * 2000 + "1" + "}" * 2001, "deeper than 32 levels"),
        ('{"type": "import", "input": ' + '{"a": ' * 40 + "1" + "}" * 41, "deeper than 32 levels"),
        ('{"type": "import", "input": {"a": NaN}}', "holds NaN, which is not valid JSON"),
        ('{"type": "import", "input": {"a": Infinity}}', "holds Infinity, which is not valid JSON"),
        ('{"type": "import", "input": {"a": -Infinity}}', "holds -Infinity"),
        ('{"type": "import", "input": {"a": 1e999}}', "holds the number 1e999, which is too large"),
        ('{"type": "import", "input": {"a": ' + "9" * 5000 + "}}", "an integer of 5000 digits"),
    ],
)
def test_json_python_reads_but_cannot_keep_is_400(
    api: Any, aws: dict[str, str], raw: str, message: str
) -> None:
    response = post_raw(api, raw)

    assert_refused(response, 400, message)
    assert stored_item_count(aws) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff\xfe{\x00}\x00", "The request body is not UTF-8 text"),
        (b'{"type": "import", "input": {"a": "\xc3\x28"}}', "The request body is not UTF-8 text"),
    ],
)
def test_bodies_that_are_not_utf8_are_400(api: Any, aws: dict[str, str], body: bytes, message: str) -> None:
    response = post_raw(api, base64.b64encode(body).decode(), base64_encoded=True)

    assert_refused(response, 400, message)
    assert stored_item_count(aws) == 0


def test_a_body_flagged_base64_that_is_not_is_400(api: Any) -> None:
    assert_refused(post_raw(api, "{not base64}", base64_encoded=True), 400, "not valid base64")


def with_properties(**properties: Any) -> str:
    image_properties = {**IMPORT_INPUT["image_properties"], **properties}
    return json.dumps({"type": "import", "input": {**LOOPBACK_INPUT, "image_properties": image_properties}})


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (with_properties(name=5), 400, "Image name in image_properties must be a string, not a number"),
        (with_properties(name={"a": 1}), 400, "must be a string, not an object"),
        (with_properties(name="x" * 2000), 400, "is 2000 characters long; at most 255 are allowed"),
        (
            with_properties(os_distro=7),
            400,
            "Image property 'os_distro' in image_properties must be a string",
        ),
        (with_properties(os_distro=["a"]), 400, "must be a string, not an array"),
        (with_properties(note="x" * 65536), 400, "is 65536 characters long; at most 65535 are allowed"),
        (
            with_properties(**{"k" * 256: "v"}),
            400,
            "Custom property should not be greater than 255 characters.",
        ),
        (with_properties(**{"": "v"}), 400, "must not be empty"),
        (with_properties(os_glance_import_task="x"), 403, "Attribute 'os_glance_import_task' is reserved."),
        (with_properties(os_glance="x"), 403, "Attribute 'os_glance' is reserved."),
        (
            with_properties(**{f"p{i}": "v" for i in range(129)}),
            413,
            "The limit has been exceeded on the number of allowed image properties. Attempted: 129, Maximum: 128",
        ),
        (
            json.dumps({"type": "import", "input": {**LOOPBACK_INPUT, "padding": "x" * 500_000}}),
            413,
            "The request body is larger than 262144 bytes.",
        ),
    ],
)
def test_image_properties_glance_would_refuse_are_refused_and_nothing_is_stored(
    loopback_api: Any, aws: dict[str, str], raw: str, status: int, message: str
) -> None:
    response = post_raw(loopback_api, raw)

    assert_refused(response, status, message)
    assert stored_item_count(aws) == 0


def test_properties_at_the_limits_are_accepted(loopback_api: Any) -> None:
    raw = with_properties(
        name="n" * 255,
        unset=None,
        **{f"p{i}": "v" for i in range(127)},
        **{"k" * 255: "v" * 1000},
    )

    response = post_raw(loopback_api, raw)

    assert response["statusCode"] == 201, response["body"][:500]


def test_a_convert_name_over_255_characters_is_400(api: Any, aws: dict[str, str]) -> None:
    body = {"type": "convert", "input": {"image_id": TASK_ID, "disk_format": "raw", "name": "n" * 256}}

    response = call(api, api_event("POST", "/v2/tasks", body=body))

    assert_refused(response, 400, "'name' in input is 256 characters long; at most 255 are allowed")
    assert stored_item_count(aws) == 0


GOOD_IMPORT = {
    "type": "import",
    "input": {
        "import_from": "http://images.invalid/disk.qcow2",
        "import_from_format": "qcow2",
        "image_properties": {"name": "d", "disk_format": "qcow2", "container_format": "bare"},
    },
}


@pytest.mark.parametrize(
    ("change", "server_status"),
    [
        ({"input": {**GOOD_IMPORT["input"], "import_from_format": "floppy"}}, 400),
        ({"input": {k: v for k, v in GOOD_IMPORT["input"].items() if k != "image_properties"}}, 400),
        ({"input": {**GOOD_IMPORT["input"], "import_from": "ftp://images.invalid/d"}}, 400),
        ({"input": {**GOOD_IMPORT["input"], "checksum": "not-an-md5"}}, 400),
        ({"type": "convert", "input": {"image_id": "x"}}, 400),
        ({"type": "export", "input": {"image_id": "x", "colour": "blue"}}, 400),
        ({"type": "teleport"}, 400),
        ({"extra": 1}, 400),
    ],
)
def test_the_documented_create_body_refuses_what_the_server_refuses(
    api: Any, change: dict[str, Any], server_status: int
) -> None:
    from jsonschema import Draft4Validator

    document = call(api, api_event("GET", "/openapi.json", authorized=False))["json"]
    schema = document["components"]["schemas"]["TaskCreate"]
    body = {**GOOD_IMPORT, **change}

    assert Draft4Validator(schema).is_valid(GOOD_IMPORT)
    assert not Draft4Validator(schema).is_valid(body)
    assert call(api, api_event("POST", "/v2/tasks", body=body))["statusCode"] == server_status
