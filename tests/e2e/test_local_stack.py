"""The local stack itself: the front behaves like API Gateway, TTL is emulated, the template is all there."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import replace
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from local.front import ApiFront, FrontServer
from local.lambda_runtime import HandlerRunner
from local.template import FunctionSpec, Route, load_yaml

pytestmark = pytest.mark.e2e


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"null")


# ---------------------------------------------------------------- the front over HTTP


def test_version_discovery_needs_no_token(local_stack):
    status, headers, body = http(f"{local_stack.api_url}/versions")

    assert status == 200
    assert body["versions"], body
    assert headers["x-openstack-request-id"]


def test_a_request_without_token_is_401_with_a_nested_error(local_stack):
    status, headers, body = http(f"{local_stack.api_url}/v2/tasks")

    assert status == 401
    assert headers["Content-Type"] == "application/json"
    assert body["error"]["code"] == 401
    assert body["error"]["message"]
    assert headers["x-openstack-request-id"]


def test_a_forged_token_is_401(local_stack):
    forged = local_stack.token("demo-project")[:-4] + "AAAA"

    status, _, body = http(f"{local_stack.api_url}/v2/tasks", headers={"X-Auth-Token": forged})

    assert status == 401
    assert body["error"]["code"] == 401


def test_a_valid_token_reaches_the_handler(local_stack):
    status, headers, body = http(f"{local_stack.api_url}/v2/tasks", headers=local_stack.headers())

    assert status == 200, body
    assert "tasks" in body
    assert headers["x-openstack-request-id"].startswith("req-")


def _is_api_gateways_missing_token_answer(status: int, headers: Any, body: Any) -> None:
    """API Gateway (REST) answers a path it has no resource for, and a method a resource lacks,
    with its MISSING_AUTHENTICATION_TOKEN response (the template shapes it as Glance's errors)."""
    assert status == 403
    assert headers["Content-Type"] == "application/json"
    assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert headers["x-openstack-request-id"]
    error = (json.loads(body) if isinstance(body, bytes) else body)["error"]
    assert (error["code"], error["message"]) == (403, "Missing Authentication Token")


def test_an_unknown_path_is_api_gateways_403_with_a_nested_error(local_stack):
    status, headers, body = http(f"{local_stack.api_url}/v3/nothing")

    _is_api_gateways_missing_token_answer(status, headers, body)


def _raw(url: str, method: str, path: str) -> tuple[int, Any, Any]:
    """Any method, even one urllib and requests would not send as it is."""
    split = urlsplit(url)
    connection = HTTPConnection(split.hostname, split.port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("method", ["POST", "TRACE", "CONNECT", "PROPFIND", "BREW"])
def test_a_method_a_known_path_lacks_is_api_gateways_403(local_stack, method):
    # (http.server alone would send a 501 HTML page for a method it has no handler for)
    _is_api_gateways_missing_token_answer(*_raw(local_stack.api_url, method, "/versions"))


def test_a_method_the_api_does_not_have_on_an_unknown_path_is_api_gateways_403(local_stack):
    _is_api_gateways_missing_token_answer(*_raw(local_stack.api_url, "TRACE", "/v3/nothing"))


def test_64_clients_connecting_at_once_are_all_answered(local_stack):
    clients = 64
    everyone_ready = threading.Barrier(clients)
    statuses: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        everyone_ready.wait(timeout=30)
        try:
            status, _, _ = _raw(local_stack.api_url, "GET", "/versions")
        except BaseException as failure:  # a reset connection, for one
            with lock:
                failures.append(failure)
        else:
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert failures == []
    assert statuses == [200] * clients


def test_the_front_listens_with_a_backlog_above_the_socketserver_default():
    assert FrontServer.server_class.request_queue_size >= 128


# ---------------------------------------------------------------- the front's decisions, with fake functions


def _function(tmp_path: Path, logical_id: str, source: str) -> FunctionSpec:
    folder = tmp_path / logical_id
    folder.mkdir()
    (folder / "app.py").write_text(source)
    return FunctionSpec(
        logical_id=logical_id,
        name=f"test-{logical_id.lower()}",
        arn=f"arn:aws:lambda:us-east-1:123456789012:function:test-{logical_id.lower()}",
        code_dir=folder,
        handler="app.lambda_handler",
        runtime="python3.13",
        timeout_seconds=3,
        memory_mb=128,
        environment={},
        layer_paths=[],
    )


POLICY_AUTHORIZER = """
def lambda_handler(event, context):
    effect = "Deny" if event["headers"].get("X-Auth-Token") == "deny" else "Allow"
    stage_arn = event["methodArn"].rsplit("/", 2)[0]
    return {
        "principalId": "user-1",
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": effect, "Resource": stage_arn + "/*/*"}
        ]},
        "context": {"project_id": "p1", "is_admin": False},
    }
"""

ECHO_OR_CRASH = """
import json
def lambda_handler(event, context):
    if event["path"] == "/crash":
        raise RuntimeError("the handler crashed")
    return {"statusCode": 200, "body": json.dumps(event["requestContext"]["authorizer"])}
"""


@pytest.fixture
def fake_front(tmp_path, local_stack):
    """A front over a fake API (authorizer + handler), with the real template's gateway responses."""
    authorizer = _function(tmp_path, "FakeAuthorizer", POLICY_AUTHORIZER)
    handler = _function(tmp_path, "FakeHandler", ECHO_OR_CRASH)
    routes = [
        Route("/{proxy+}", "ANY", "FakeHandler", "FakeAuthorizer", ("X-Auth-Token",), "FakeApi"),
    ]
    template = replace(local_stack.stack.template, routes=routes)
    return ApiFront(template, HandlerRunner([authorizer, handler]))


def test_a_deny_policy_is_403_with_the_template_body(fake_front):
    response = fake_front.handle("GET", "/anything", [("X-Auth-Token", "deny")], b"")

    assert response.status == 403
    assert json.loads(response.body)["error"]["code"] == 403


def test_an_allow_puts_the_context_as_strings_in_the_proxy_event(fake_front):
    response = fake_front.handle("GET", "/anything", [("X-Auth-Token", "ok")], b"")

    assert response.status == 200
    authorizer = json.loads(response.body)
    assert authorizer["project_id"] == "p1"
    assert authorizer["is_admin"] == "false"
    assert authorizer["principalId"] == "user-1"


def test_a_handler_crash_is_502_and_its_traceback_is_logged(fake_front, caplog):
    with caplog.at_level(logging.ERROR, logger="local.lambda"):
        response = fake_front.handle("GET", "/crash", [("X-Auth-Token", "ok")], b"")

    assert response.status == 502
    assert json.loads(response.body)["error"]["code"] == 500  # the template's DEFAULT_5XX body
    assert b"the handler crashed" not in response.body
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Traceback" in logged and "RuntimeError: the handler crashed" in logged


# ---------------------------------------------------------------- DynamoDB TTL


def test_the_ttl_sweeper_deletes_expired_items(local_stack):
    stack = local_stack.stack
    table = next(spec for spec in stack.template.tables.values() if spec.ttl_attribute)
    dynamodb = local_stack.client("dynamodb")
    hash_key = next(
        key["AttributeName"] for key in table.create_kwargs["KeySchema"] if key["KeyType"] == "HASH"
    )
    now = int(time.time())
    dynamodb.put_item(
        TableName=table.name, Item={hash_key: {"S": "ttl-expired"}, table.ttl_attribute: {"N": str(now - 60)}}
    )
    dynamodb.put_item(
        TableName=table.name, Item={hash_key: {"S": "ttl-alive"}, table.ttl_attribute: {"N": str(now + 3600)}}
    )

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if "Item" not in dynamodb.get_item(TableName=table.name, Key={hash_key: {"S": "ttl-expired"}}):
            break
        time.sleep(0.2)

    assert "Item" not in dynamodb.get_item(TableName=table.name, Key={hash_key: {"S": "ttl-expired"}})
    assert "Item" in dynamodb.get_item(TableName=table.name, Key={hash_key: {"S": "ttl-alive"}})
    dynamodb.delete_item(TableName=table.name, Key={hash_key: {"S": "ttl-alive"}})


# ---------------------------------------------------------------- everything in the template exists


def test_every_resource_of_the_template_exists_behind_the_aws_endpoint(local_stack):
    # Counted from the file itself, so a resource added to the template is checked without editing this test.
    declared = Counter(
        resource["Type"] for resource in load_yaml(local_stack.stack.template_path)["Resources"].values()
    )
    expected_functions = {spec.name for spec in local_stack.stack.template.functions.values()}

    tables = local_stack.client("dynamodb").list_tables()["TableNames"]
    buckets = [bucket["Name"] for bucket in local_stack.client("s3").list_buckets()["Buckets"]]
    functions = {fn["FunctionName"] for fn in local_stack.client("lambda").list_functions()["Functions"]}
    machines = local_stack.client("stepfunctions").list_state_machines()["stateMachines"]

    assert sorted(tables) == sorted(local_stack.tables.values())
    assert len(tables) == declared["AWS::DynamoDB::Table"]
    assert sorted(buckets) == sorted(local_stack.buckets.values())
    assert len(buckets) == declared["AWS::S3::Bucket"]
    assert expected_functions <= functions
    assert len(expected_functions) == declared["AWS::Serverless::Function"]
    assert len(machines) == declared["AWS::Serverless::StateMachine"]


def test_ttl_settings_come_from_the_template(local_stack):
    dynamodb = local_stack.client("dynamodb")
    for spec in local_stack.stack.template.tables.values():
        description = dynamodb.describe_time_to_live(TableName=spec.name)["TimeToLiveDescription"]
        if spec.ttl_attribute:
            assert description == {"TimeToLiveStatus": "ENABLED", "AttributeName": spec.ttl_attribute}
        else:
            assert description["TimeToLiveStatus"] == "DISABLED"


def test_links_the_handlers_build_point_back_at_the_local_server(local_stack, image_server):
    versions = requests.get(f"{local_stack.api_url}/versions", timeout=10).json()
    body = {
        "type": "import",
        "input": {
            "import_from": image_server.url("links.raw"),
            "import_from_format": "raw",
            "image_properties": {"disk_format": "raw", "container_format": "bare"},
        },
    }
    created = requests.post(
        f"{local_stack.api_url}/v2/tasks", json=body, headers=local_stack.headers("links-project"), timeout=10
    )

    assert versions["versions"][0]["links"][0]["href"] == f"{local_stack.api_url}/v2/"
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"{local_stack.api_url}/v2/tasks/{created.json()['id']}"
