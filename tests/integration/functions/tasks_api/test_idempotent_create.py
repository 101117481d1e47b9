"""`Idempotency-Key` on POST /v2/tasks, through the real handler with DynamoDB and Step Functions on moto."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tests.support import api_event, call, header, load_handler

IMPORT_INPUT = {
    "import_from": "https://93.184.216.34/images/cirros.qcow2",
    "import_from_format": "qcow2",
    "image_properties": {"name": "cirros", "disk_format": "qcow2", "container_format": "bare"},
}
BODY = {"type": "import", "input": IMPORT_INPUT}
KEY = "create-cirros-2024-06-01"
REUSED = "This Idempotency-Key was used with a different request body; use a new key for a new task"


@pytest.fixture
def api(aws: dict[str, str]) -> Any:
    module = load_handler("tasks_api")
    module.tasks_table.cache_clear()
    module.task_service.cache_clear()
    import idempotent_create

    idempotent_create.persistence.cache_clear()
    return module


def post(api: Any, body: Any = BODY, key: str | None = KEY, project: str = "project-a") -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key is not None else None
    return call(api, api_event("POST", "/v2/tasks", body=body, project=project, headers=headers))


def executions(aws: dict[str, str]) -> list[str]:
    listed = boto3.client("stepfunctions").list_executions(stateMachineArn=aws["STATE_MACHINE_ARN"])
    return [execution["name"] for execution in listed["executions"]]


def test_the_same_key_and_body_again_answer_the_first_task(api: Any, aws: dict[str, str]) -> None:
    # Given a task created with a key
    first = post(api)
    assert first["statusCode"] == 201, first["body"]
    # When the client sends the same request again (its first answer was lost)
    again = post(api)
    # Then it gets the same task, with the same status and Location, and nothing new was started
    assert again["statusCode"] == 201, again["body"]
    assert again["json"]["id"] == first["json"]["id"]
    assert again["json"]["input"] == IMPORT_INPUT and again["json"]["status"] == "pending"
    assert header(again, "Location") == header(first, "Location") is not None
    assert executions(aws) == [first["json"]["id"]]


def test_the_body_is_compared_as_json_not_as_text(api: Any) -> None:
    first = post(api)
    reordered = api_event(
        "POST",
        "/v2/tasks",
        raw_body=json.dumps({"input": IMPORT_INPUT, "type": "import"}, indent=2),
        headers={"Idempotency-Key": KEY},
    )
    again = call(api, reordered)
    assert again["statusCode"] == 201 and again["json"]["id"] == first["json"]["id"]


def test_a_replay_shows_the_task_as_it_is_now(api: Any) -> None:
    first = post(api)["json"]
    table = api.tasks_table()
    from tests.support import start_processing

    start_processing(table, table.get(first["id"]))

    again = post(api)
    assert again["statusCode"] == 201
    assert again["json"]["id"] == first["id"] and again["json"]["status"] == "processing"


def test_the_same_key_with_another_body_is_refused_with_422(api: Any, aws: dict[str, str]) -> None:
    first = post(api)["json"]
    other_body = {
        "type": "import",
        "input": {**IMPORT_INPUT, "import_from_format": "qcow2", "checksum": "0" * 32},
    }

    refused = post(api, body=other_body)

    assert refused["statusCode"] == 422
    assert refused["json"]["error"]["code"] == 422
    assert refused["json"]["error"]["message"] == REUSED
    assert refused["json"]["error"]["title"] in {"Unprocessable Entity", "Unprocessable Content"}
    assert executions(aws) == [first["id"]]


def test_keys_are_scoped_per_project(api: Any, aws: dict[str, str]) -> None:
    mine = post(api, project="project-a")
    theirs = post(api, project="project-b")
    # Another project's different body under the same key is no reuse either
    third = post(
        api, project="project-c", body={"type": "import", "input": {**IMPORT_INPUT, "checksum": "1" * 32}}
    )

    assert mine["statusCode"] == theirs["statusCode"] == third["statusCode"] == 201
    assert theirs["json"]["owner"] == "project-b" and third["json"]["owner"] == "project-c"
    assert len({mine["json"]["id"], theirs["json"]["id"], third["json"]["id"]}) == 3
    assert sorted(executions(aws)) == sorted([mine["json"]["id"], theirs["json"]["id"], third["json"]["id"]])


def test_without_a_key_every_request_makes_a_task(api: Any) -> None:
    one = post(api, key=None)
    two = post(api, key=None)
    assert one["statusCode"] == two["statusCode"] == 201
    assert one["json"]["id"] != two["json"]["id"]


def test_a_refused_create_leaves_the_key_free(api: Any) -> None:
    # Given a request refused for its body (the import filter: a port that is not allowed)
    bad = {"type": "import", "input": {**IMPORT_INPUT, "import_from": "http://93.184.216.34:8080/a.img"}}
    assert post(api, body=bad)["statusCode"] == 400
    # When the client fixes the body and retries under the same key, Then the task is made
    fixed = post(api)
    assert fixed["statusCode"] == 201, fixed["body"]


@pytest.mark.parametrize(
    "key",
    ["", " ", " leading", "trailing ", "x" * 256, "caf\u00e9", "tab\tinside", "new\nline", "\x7f"],
)
def test_a_malformed_key_is_a_400(api: Any, aws: dict[str, str], key: str) -> None:
    refused = post(api, key=key)
    assert refused["statusCode"] == 400
    assert (
        "Idempotency-Key header must be 1 to 255 printable ASCII characters"
        in refused["json"]["error"]["message"]
    )
    assert executions(aws) == []


@pytest.mark.parametrize("key", ["a", "x" * 255, "order 42/retry #1", '~!@#$%^&*()_+{}|:"<>?'])
def test_keys_of_1_to_255_printable_characters_are_accepted(api: Any, key: str) -> None:
    assert post(api, key=key)["statusCode"] == 201


def test_two_different_keys_in_one_request_are_a_400(api: Any) -> None:
    event = api_event("POST", "/v2/tasks", body=BODY)
    event["headers"]["Idempotency-Key"] = "two"
    event["multiValueHeaders"]["Idempotency-Key"] = ["one", "two"]
    refused = call(api, event)
    assert refused["statusCode"] == 400
    assert "one Idempotency-Key header" in refused["json"]["error"]["message"]


def test_a_request_while_the_first_with_its_key_is_in_flight_is_told_to_retry(
    api: Any, aws: dict[str, str]
) -> None:
    import idempotent_create

    from imagetasks.domain.tasks import TaskType

    # Given a create with a key still in flight (its idempotency record says "in progress")
    during: list[dict[str, Any]] = []

    def create_while_a_duplicate_arrives() -> Any:
        during.append(post(api))
        return api.task_service().create(TaskType.IMPORT, IMPORT_INPUT, "project-a")

    task, replayed = idempotent_create.create_once(
        "project-a", KEY, BODY, create_while_a_duplicate_arrives, api.unexpired_task
    )

    # Then the duplicate was told to retry, and made nothing
    assert not replayed
    assert during[0]["statusCode"] == 409
    assert "retry" in during[0]["json"]["error"]["message"]
    assert header(during[0], "Retry-After") == "1"
    assert executions(aws) == [task.id]
    # And once the first is done, the retry answers its task
    retried = post(api)
    assert retried["statusCode"] == 201 and retried["json"]["id"] == task.id


def test_a_replayed_task_that_expired_meanwhile_is_answered_as_it_was_made(
    api: Any, aws: dict[str, str]
) -> None:
    first = post(api)["json"]
    boto3.client("dynamodb").delete_item(TableName=aws["TASKS_TABLE"], Key={"id": {"S": first["id"]}})

    again = post(api)

    assert again["statusCode"] == 201
    assert again["json"]["id"] == first["id"] and again["json"]["status"] == "pending"
    assert again["json"]["input"] == IMPORT_INPUT
