"""An upload to the uploads bucket becomes an import task: the real handler, S3, DynamoDB and Step
Functions on moto, events from events/s3_object_created.json."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from botocore.exceptions import ClientError

from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.adapters.workflow import Workflow
from imagetasks.domain.import_errors import TransientStorageError
from imagetasks.domain.tasks import Task
from tests.support import FakeLambdaContext, load_event, load_handler

QCOW2 = b"QFI\xfb" + b"\0" * 508  # only the trigger reads this object, and only its size


@pytest.fixture
def trigger(aws: dict[str, str], local_template: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The handler with the UploadTriggerFunction's own environment (and the test state machine)."""
    environment = dict(local_template.functions["UploadTriggerFunction"].environment)
    environment["STATE_MACHINE_ARN"] = aws["STATE_MACHINE_ARN"]
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    module = load_handler("upload_trigger")
    for cached in (
        module.task_service,
        module.uploaded_objects,
        module.idempotency_config,
        module.import_once,
    ):
        cached.cache_clear()
    yield module


@pytest.fixture
def bucket(trigger: Any) -> str:
    return str(trigger.settings().uploads_bucket)


def put(bucket: str, key: str, body: bytes = QCOW2, metadata: dict[str, str] | None = None) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata or {})


def s3_record(
    bucket: str, key: str, *, sequencer: str = "0065F2D3E9B7A1C2D4", size: int = 512
) -> dict[str, Any]:
    """The canonical record for `key` (encoded the way S3 encodes keys in events), naming the
    object stored there now as S3 would: its ETag, and no version (the bucket keeps none)."""
    record = copy.deepcopy(load_event("s3_object_created.json")["Records"][0])
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["s3"]["object"].update({"key": quote_plus(key), "sequencer": sequencer, "size": size})
    del record["s3"]["object"]["versionId"]
    try:
        stored = boto3.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError:
        pass  # an event for an object already gone: the canonical ETag stays
    else:
        record["s3"]["object"]["eTag"] = stored["ETag"].strip('"')
    return record


def s3_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def invoke(trigger: Any, event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = trigger.lambda_handler(event, FakeLambdaContext())
    return result


def stored_tasks(aws: dict[str, str]) -> list[Task]:
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    items = boto3.client("dynamodb").scan(
        TableName=aws["TASKS_TABLE"],
        FilterExpression="#r = :task",
        ExpressionAttributeNames={"#r": "record"},
        ExpressionAttributeValues={":task": {"S": "task"}},
    )["Items"]
    tasks = [table.get(item["id"]["S"]) for item in items]
    return [task for task in tasks if task is not None]


def execution_names(aws: dict[str, str]) -> list[str]:
    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=aws["STATE_MACHINE_ARN"])
    return [execution["name"] for execution in executions["executions"]]


def idempotency_records(trigger: Any) -> int:
    return int(boto3.client("dynamodb").scan(TableName=trigger.settings().idempotency_table)["Count"])


# ------------------------------------------------------------------ a good upload
def test_upload_creates_pending_import_task_owned_by_the_keys_project(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given a qcow2 uploaded under project-a's prefix
    put(bucket, "uploads/project-a/cirros.qcow2", metadata={"os-distro": "cirros"})

    # When S3's event reaches the trigger
    result = invoke(trigger, s3_event(s3_record(bucket, "uploads/project-a/cirros.qcow2")))

    # Then one pending import task of project-a records where the image comes from
    [task] = stored_tasks(aws)
    assert result["outcomes"] == [
        {"outcome": "created", "key": "uploads/project-a/cirros.qcow2", "task_id": task.id, "reason": None}
    ]
    assert (task.type.value, task.status.value, task.owner) == ("import", "pending", "project-a")
    assert task.input == {
        "import_from": f"s3://{bucket}/uploads/project-a/cirros.qcow2",
        "import_from_format": "qcow2",
        "image_properties": {
            "os_distro": "cirros",
            "name": "cirros.qcow2",
            "container_format": "bare",
            "disk_format": "qcow2",
        },
        "source": "s3-upload",
        # the object's ETag: the import reads, and removes, only this object
        "source_etag": hashlib.md5(QCOW2, usedforsecurity=False).hexdigest(),
    }
    # And its workflow was started under the task's id
    assert execution_names(aws) == [task.id]


def test_key_with_spaces_arrives_encoded_and_is_decoded(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given an object whose key has spaces and a plus sign (S3 sends "a+b" for "a b", "%2B" for "+")
    key = "uploads/project-a/my disk+v2.qcow2"
    put(bucket, key)
    record = s3_record(bucket, key)
    assert record["s3"]["object"]["key"] == "uploads%2Fproject-a%2Fmy+disk%2Bv2.qcow2"

    # When the event reaches the trigger
    invoke(trigger, s3_event(record))

    # Then the task points at the real key and is named after the file
    [task] = stored_tasks(aws)
    assert task.status.value == "pending"
    assert task.input is not None
    assert task.input["import_from"] == f"s3://{bucket}/{key}"
    assert task.input["image_properties"]["name"] == "my disk+v2.qcow2"


# ------------------------------------------------------------------ at least once
def test_same_event_twice_creates_one_task(trigger: Any, bucket: str, aws: dict[str, str]) -> None:
    # Given an upload whose event S3 delivers twice
    put(bucket, "uploads/project-a/cirros.qcow2")
    event = s3_event(s3_record(bucket, "uploads/project-a/cirros.qcow2"))

    # When both deliveries reach the trigger
    first = invoke(trigger, event)
    second = invoke(trigger, event)

    # Then the second is answered from the idempotency record: one task, one execution
    assert second == first
    assert idempotency_records(trigger) == 1
    assert [task.id for task in stored_tasks(aws)] == [first["outcomes"][0]["task_id"]]
    assert execution_names(aws) == [first["outcomes"][0]["task_id"]]


def test_one_upload_announced_twice_at_two_times_without_a_sequencer_creates_one_task(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given one multipart upload, which moto announces twice (ObjectCreated:Put, then
    # :CompleteMultipartUpload), at two times and without S3's sequencer
    put(bucket, "uploads/project-a/big.qcow2")
    records = []
    for name, time in (
        ("Put", "2025-03-14T09:26:53.589Z"),
        ("CompleteMultipartUpload", "2025-03-14T09:26:53.604Z"),
    ):
        record = s3_record(bucket, "uploads/project-a/big.qcow2")
        del record["s3"]["object"]["sequencer"]
        record.update({"eventName": f"ObjectCreated:{name}", "eventTime": time})
        records.append(record)

    # When both reach the trigger
    first = invoke(trigger, s3_event(records[0]))
    second = invoke(trigger, s3_event(records[1]))

    # Then they name one object: one task, one execution
    assert second == first
    [task] = stored_tasks(aws)
    assert execution_names(aws) == [task.id]


def test_the_key_uploaded_again_with_new_data_creates_a_second_task(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given an upload turned into a task
    put(bucket, "uploads/project-a/cirros.qcow2")
    first = invoke(trigger, s3_event(s3_record(bucket, "uploads/project-a/cirros.qcow2", sequencer="01")))

    # When the key is uploaded again with other data, and its event arrives (twice)
    put(bucket, "uploads/project-a/cirros.qcow2", body=QCOW2 + b"v2")
    again = s3_event(s3_record(bucket, "uploads/project-a/cirros.qcow2", sequencer="02"))
    second = invoke(trigger, again)
    invoke(trigger, again)

    # Then the new upload has a task of its own, naming its own ETag
    ids = {first["outcomes"][0]["task_id"], second["outcomes"][0]["task_id"]}
    assert len(ids) == 2 and {task.id for task in stored_tasks(aws)} == ids
    assert sorted(execution_names(aws)) == sorted(ids)
    [newest] = [task for task in stored_tasks(aws) if task.id == second["outcomes"][0]["task_id"]]
    assert newest.input is not None
    assert newest.input["source_etag"] == hashlib.md5(QCOW2 + b"v2", usedforsecurity=False).hexdigest()


def test_an_event_whose_object_was_replaced_before_it_was_handled_creates_nothing(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given an upload's event that arrives after the key was uploaded again
    put(bucket, "uploads/project-a/cirros.qcow2")
    stale = s3_event(s3_record(bucket, "uploads/project-a/cirros.qcow2", sequencer="01"))
    put(bucket, "uploads/project-a/cirros.qcow2", body=QCOW2 + b"v2")

    # When it reaches the trigger
    result = invoke(trigger, stale)

    # Then it makes no task: the object there now is the newer upload's, with an event of its own
    assert result["outcomes"][0]["outcome"] == "ignored"
    assert "replaced by a newer upload" in result["outcomes"][0]["reason"]
    assert stored_tasks(aws) == [] and execution_names(aws) == []


def test_same_event_without_its_idempotency_record_still_creates_one_task(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given an upload already turned into a task, whose idempotency record is gone (expired, say)
    put(bucket, "uploads/project-a/cirros.qcow2")
    event = s3_event(s3_record(bucket, "uploads/project-a/cirros.qcow2"))
    first = invoke(trigger, event)
    [before] = stored_tasks(aws)
    dynamodb = boto3.client("dynamodb")
    table = trigger.settings().idempotency_table
    for item in dynamodb.scan(TableName=table)["Items"]:
        dynamodb.delete_item(TableName=table, Key={"id": item["id"]})

    # When the event is delivered again
    second = invoke(trigger, event)

    # Then the task id derived from the event meets the existing task: still one task, and the
    # image it will create keeps the random id chosen first (the event does not give it away)
    assert second["outcomes"][0]["task_id"] == first["outcomes"][0]["task_id"]
    [after] = stored_tasks(aws)
    assert after.new_image_id == before.new_image_id and before.new_image_id is not None
    assert before.new_image_id not in json.dumps(second)
    assert len(execution_names(aws)) == 1


def test_retried_invocation_after_a_failed_start_creates_one_task_and_starts_it(
    trigger: Any, bucket: str, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a first invocation that stored the task but could not start its workflow
    put(bucket, "uploads/project-a/cirros.qcow2")
    event = s3_event(s3_record(bucket, "uploads/project-a/cirros.qcow2"))
    start = Workflow.start

    def busy(self: Workflow, task_id: str, task_type: str) -> None:
        raise RuntimeError("Step Functions is unavailable")

    monkeypatch.setattr(Workflow, "start", busy)
    with pytest.raises(trigger.RecordsNotImported):
        invoke(trigger, event)
    [waiting] = stored_tasks(aws)
    assert execution_names(aws) == []

    # When Lambda retries the invocation and the workflow service is back
    monkeypatch.setattr(Workflow, "start", start)
    result = invoke(trigger, event)

    # Then the same task is kept and its workflow started, once
    assert result["outcomes"][0]["task_id"] == waiting.id
    assert [task.id for task in stored_tasks(aws)] == [waiting.id]
    assert execution_names(aws) == [waiting.id]


# ------------------------------------------------------------------ bad uploads
def test_key_outside_a_project_prefix_makes_no_task_and_says_why(
    trigger: Any, bucket: str, aws: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given an object directly under uploads/, with no project
    put(bucket, "uploads/cirros.qcow2")

    # When its event reaches the trigger
    with caplog.at_level(logging.WARNING):
        result = invoke(trigger, s3_event(s3_record(bucket, "uploads/cirros.qcow2")))

    # Then nothing is created, and a warning says why
    assert stored_tasks(aws) == [] and execution_names(aws) == []
    assert result["outcomes"][0]["outcome"] == "ignored"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("has no project" in str(getattr(r, "reason", "")) for r in warnings)


def test_empty_object_becomes_a_failed_task_with_a_message(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given an empty object under project-a's prefix
    put(bucket, "uploads/project-a/empty.qcow2", body=b"")

    # When its event reaches the trigger
    invoke(trigger, s3_event(s3_record(bucket, "uploads/project-a/empty.qcow2", size=0)))

    # Then project-a sees a failed task saying so, and no workflow runs
    [task] = stored_tasks(aws)
    assert (task.owner, task.status.value) == ("project-a", "failure")
    assert (
        task.message
        == "The upload uploads/project-a/empty.qcow2 is empty (0 bytes); upload the image file again."
    )
    assert task.expires_at is not None
    assert execution_names(aws) == []


def test_unknown_extension_without_disk_format_becomes_a_failed_task(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    put(bucket, "uploads/project-a/disk.bin")

    invoke(trigger, s3_event(s3_record(bucket, "uploads/project-a/disk.bin")))

    [task] = stored_tasks(aws)
    assert task.status.value == "failure" and task.message is not None
    assert "x-amz-meta-disk-format" in task.message
    assert execution_names(aws) == []


def test_input_the_api_would_refuse_becomes_a_failed_task_with_the_apis_message(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given metadata naming a container format this cloud does not offer
    put(bucket, "uploads/project-a/disk.qcow2", metadata={"container-format": "tarball"})

    # When its event reaches the trigger
    invoke(trigger, s3_event(s3_record(bucket, "uploads/project-a/disk.qcow2")))

    # Then the task fails with the same words the API would answer
    [task] = stored_tasks(aws)
    assert task.status.value == "failure" and task.message is not None
    assert task.message.startswith("Invalid container_format 'tarball' in image_properties")
    assert execution_names(aws) == []


def test_reserved_or_over_long_metadata_becomes_a_failed_task_with_glances_message(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given metadata that would set a property Glance reserves (os-glance-* → os_glance_*)
    put(bucket, "uploads/project-a/disk.qcow2", metadata={"os-glance-import-task": "forged"})

    # When its event reaches the trigger
    invoke(trigger, s3_event(s3_record(bucket, "uploads/project-a/disk.qcow2")))

    # Then the task fails with the words the API answers (there with a 403), and nothing runs
    [task] = stored_tasks(aws)
    assert task.status.value == "failure"
    assert task.message == "Attribute 'os_glance_import_task' is reserved."
    assert execution_names(aws) == []


def test_object_gone_before_the_event_is_handled_becomes_a_failed_task(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given an event for an object that no longer exists
    # When it reaches the trigger
    invoke(trigger, s3_event(s3_record(bucket, "uploads/project-a/deleted.qcow2")))

    # Then the owner sees why nothing was imported
    [task] = stored_tasks(aws)
    assert (task.owner, task.status.value) == ("project-a", "failure")
    assert task.message is not None and "no longer exists" in task.message


def test_metadata_claiming_another_owner_does_not_change_the_owner(
    trigger: Any, bucket: str, aws: dict[str, str]
) -> None:
    # Given project-a's upload whose metadata claims project-b
    put(
        bucket,
        "uploads/project-a/disk.qcow2",
        metadata={"owner": "project-b", "project-id": "project-b", "name": "mine"},
    )

    # When its event reaches the trigger
    invoke(trigger, s3_event(s3_record(bucket, "uploads/project-a/disk.qcow2")))

    # Then project-a owns the task and project-b appears nowhere in it
    [task] = stored_tasks(aws)
    assert task.owner == "project-a" and task.status.value == "pending"
    assert "project-b" not in repr(task.input)


# ------------------------------------------------------------------ several records
def test_each_record_is_handled_on_its_own(trigger: Any, bucket: str, aws: dict[str, str]) -> None:
    # Given one event with a key without owner, an empty object and a good upload
    put(bucket, "uploads/stray.qcow2")
    put(bucket, "uploads/project-a/empty.raw", body=b"")
    put(bucket, "uploads/project-b/good.raw")
    event = s3_event(
        s3_record(bucket, "uploads/stray.qcow2", sequencer="01"),
        s3_record(bucket, "uploads/project-a/empty.raw", sequencer="02"),
        s3_record(bucket, "uploads/project-b/good.raw", sequencer="03"),
    )

    # When it reaches the trigger
    result = invoke(trigger, event)

    # Then the bad records do not stop the good one
    assert [outcome["outcome"] for outcome in result["outcomes"]] == ["ignored", "failed", "created"]
    statuses = sorted((task.owner, task.status.value) for task in stored_tasks(aws))
    assert statuses == [("project-a", "failure"), ("project-b", "pending")]


def test_a_record_that_fails_for_a_passing_reason_fails_the_invocation_after_the_others(
    trigger: Any,
    bucket: str,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given two uploads, and S3 throttling the metadata read of the first
    put(bucket, "uploads/project-a/first.qcow2")
    put(bucket, "uploads/project-a/second.qcow2")
    objects = trigger.uploaded_objects()
    head = objects.head

    def throttled(bucket_name: str, key: str, version_id: str | None = None) -> Any:
        if key.endswith("first.qcow2"):
            raise TransientStorageError("S3 is busy (SlowDown)")
        return head(bucket_name, key, version_id)

    monkeypatch.setattr(objects, "head", throttled)
    event = s3_event(
        s3_record(bucket, "uploads/project-a/first.qcow2", sequencer="01"),
        s3_record(bucket, "uploads/project-a/second.qcow2", sequencer="02"),
    )

    # When the event reaches the trigger
    with caplog.at_level(logging.ERROR), pytest.raises(trigger.RecordsNotImported, match=r"first\.qcow2"):
        invoke(trigger, event)

    # Then the throttling is logged, the second upload has its task, and the first is left for the retry
    logged = [r for r in caplog.records if r.getMessage().startswith("Upload not handled")]
    assert [type(r.exc_info[1]) for r in logged if r.exc_info] == [TransientStorageError]
    [task] = stored_tasks(aws)
    assert task.input is not None and task.input["import_from"].endswith("second.qcow2")

    # And the retry creates the first one's task without repeating the second
    monkeypatch.setattr(objects, "head", head)
    invoke(trigger, event)
    assert sorted(t.input["import_from"].rsplit("/", 1)[-1] for t in stored_tasks(aws) if t.input) == [
        "first.qcow2",
        "second.qcow2",
    ]
