"""local/moto_fixes.py: moto's S3 at real sizes and the memory the local stack keeps per task.

Behaviour: the same S3 calls answer the same with and without the fixes (moto_s3_scenario.py, run
in-process and over moto's HTTP server). Mechanism: large objects stay in files, GET bodies are
streamed, and moto's model registries no longer keep every DynamoDB item copy alive. Speed and memory
figures are `make bench`'s (section `large`), never asserted here.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws

from local.moto_fixes import KeyReader, local_moto_fixes, serialise_dynamodb_writes
from tests.support import ROOT

MiB = 1024 * 1024


def _scenario(mode: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "layers/common/python"), str(ROOT)]))
    completed = subprocess.run(
        [sys.executable, "-m", "tests.local.moto_s3_scenario", mode],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_s3_answers_are_the_same_with_and_without_the_fixes() -> None:
    plain, patched = _scenario("plain"), _scenario("patched")
    assert patched == plain
    # ... and the scenario checks something: every body held the expected bytes, multipart ETags
    # are md5-of-md5s with the part count.
    for path in ("in_process", "http"):
        case = patched[path]["multipart-CRC32"]
        assert case["bytes"] and case["range"][0] and case["suffix"][0] and case["copy"][0]
        assert case["part_copy"][0] and case["copy_in_place"][0]
        assert case["complete"]["ETag"].endswith('-3"')
        assert case["get"]["ChecksumCRC32"].endswith("-3")
        assert case["part_copy"][2].endswith('-2"')


@pytest.fixture
def s3() -> Iterator[Any]:
    local_moto_fixes()
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="fixes-bucket")
        yield client


def _multipart(s3: Any, key: str, parts: list[bytes]) -> dict[str, Any]:
    upload = s3.create_multipart_upload(Bucket="fixes-bucket", Key=key, ContentType="application/x-image")
    etags = [
        s3.upload_part(Bucket="fixes-bucket", Key=key, UploadId=upload["UploadId"], PartNumber=n, Body=body)[
            "ETag"
        ]
        for n, body in enumerate(parts, start=1)
    ]
    answer: dict[str, Any] = s3.complete_multipart_upload(
        Bucket="fixes-bucket",
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, start=1)]},
    )
    return answer


def _stored(key: str) -> Any:
    from moto.s3.models import s3_backends

    return s3_backends["123456789012"]["aws"].get_object("fixes-bucket", key)


def test_a_completed_multipart_object_is_a_file_with_the_md5_of_md5s_etag(s3: Any) -> None:
    parts = [random.Random(n).randbytes(size) for n, size in enumerate((5 * MiB, 5 * MiB, 100))]
    answer = _multipart(s3, "image", parts)
    md5s = b"".join(hashlib.md5(p, usedforsecurity=False).digest() for p in parts)
    assert answer["ETag"] == f'"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-3"'
    key = _stored("image")
    assert key._value_buffer._rolled  # on disk, taken over as a file: never joined in memory
    assert key.size == sum(map(len, parts))
    body = s3.get_object(Bucket="fixes-bucket", Key="image")["Body"]
    assert isinstance(body._raw_stream, KeyReader)  # in-process GETs stream from the file
    assert body.read() == b"".join(parts)


def test_copies_read_only_their_range_and_outlive_the_source(s3: Any) -> None:
    whole = random.Random(7).randbytes(12 * MiB)
    s3.put_object(Bucket="fixes-bucket", Key="source", Body=whole)
    stream = s3.get_object(Bucket="fixes-bucket", Key="source", Range="bytes=1000-")["Body"]
    s3.copy_object(Bucket="fixes-bucket", Key="copy", CopySource={"Bucket": "fixes-bucket", "Key": "source"})
    s3.delete_object(Bucket="fixes-bucket", Key="source")
    gc.collect()
    # The open GET keeps its own descriptor: the deleted object's bytes are still served whole.
    assert stream.read() == whole[1000:]
    copied = s3.get_object(Bucket="fixes-bucket", Key="copy")
    assert copied["ETag"] == f'"{hashlib.md5(whole, usedforsecurity=False).hexdigest()}"'
    assert copied["Body"].read() == whole


def test_downloads_through_moto_server_over_http_are_streamed_and_ranged(tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    local_moto_fixes()
    whole = random.Random(3).randbytes(11 * MiB + 5)
    with mock_aws():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://{host}:{port}")
            s3.create_bucket(Bucket="fixes-bucket")
            half = 6 * MiB
            _multipart(s3, "image", [whole[:half], whole[half:]])
            url = s3.generate_presigned_url("get_object", Params={"Bucket": "fixes-bucket", "Key": "image"})
            response = requests.get(url, stream=True, timeout=60)
            assert response.status_code == 200
            assert response.headers["Content-Length"] == str(len(whole))
            assert response.headers["Content-Type"] == "application/x-image"
            assert b"".join(response.iter_content(MiB)) == whole
            ranged = requests.get(url, headers={"Range": "bytes=5-6291460"}, timeout=60)
            assert ranged.status_code == 206
            assert ranged.headers["Content-Range"] == f"bytes 5-6291460/{len(whole)}"
            assert ranged.content == whole[5:6291461]
            path = tmp_path / "download.bin"
            s3.download_file("fixes-bucket", "image", str(path))  # s3transfer: ranged GETs
            assert path.read_bytes() == whole
        finally:
            server.stop()


def test_dynamodb_transactions_leave_no_item_copies_behind() -> None:
    """The per-task leak: each transaction deep-copied its tables and moto's registry kept every
    copied item forever. With the fix, the items moto tracks are the ones that exist."""
    from moto.dynamodb.models.dynamo_type import Item

    local_moto_fixes()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        _table(dynamodb, "fixes-table")

        def transactions(first: int, count: int) -> int:
            for n in range(first, first + count):
                dynamodb.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": "fixes-table", "Item": {"id": {"S": f"{n}-{i}"}}}}
                        for i in range(5)
                    ]
                )
            gc.collect()
            return len(list(Item.instances_tracked))

        after_20 = transactions(0, 20)
        after_60 = transactions(20, 40)
        # 300 items exist; unpatched, moto tracks every copy: 44,550 items after these 60.
        assert after_20 <= 100 + 10
        assert after_60 <= 300 + 10


def test_replaced_s3_objects_are_released(s3: Any) -> None:
    import weakref

    s3.put_object(Bucket="fixes-bucket", Key="k", Body=b"x" * 100)
    first = weakref.ref(_stored("k"))
    for _ in range(3):
        s3.put_object(Bucket="fixes-bucket", Key="k", Body=b"y" * 100)
    gc.collect()
    assert first() is None


def test_an_in_process_part_upload_is_stored_from_the_callers_bytes_and_then_let_go(s3: Any) -> None:
    # Given a part body and a multipart upload (botocore sends it aws-chunked, with a CRC32 trailer)
    body = random.Random(13).randbytes(6 * MiB)
    upload = s3.create_multipart_upload(Bucket="fixes-bucket", Key="part", ChecksumAlgorithm="CRC32")
    held_before = sys.getrefcount(body)
    # When it is uploaded with the cycle collector off (a request left in a cycle would keep it)
    gc.disable()
    try:
        answer = s3.upload_part(
            Bucket="fixes-bucket",
            Key="part",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=body,
            ChecksumAlgorithm="CRC32",
        )
        held_after = sys.getrefcount(body)
    finally:
        gc.enable()
    # Then the part holds exactly those bytes, with the trailer's checksum and the md5 ETag
    import base64
    import zlib

    assert answer["ChecksumCRC32"] == base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    assert answer["ETag"] == f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
    parts = s3.list_parts(Bucket="fixes-bucket", Key="part", UploadId=upload["UploadId"])["Parts"]
    assert parts[0]["Size"] == len(body)
    # ... and nothing of the handled request still refers to the caller's bytes
    assert held_after == held_before


# ---------------------------------------------------------------- transactions roll back by item


def _table(dynamodb: Any, name: str, range_key: bool = False) -> None:
    keys = [{"AttributeName": "id", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "id", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "part", "KeyType": "RANGE"})
        attributes.append({"AttributeName": "part", "AttributeType": "S"})
    dynamodb.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST"
    )


def _items(dynamodb: Any, name: str) -> list[dict[str, Any]]:
    return sorted(dynamodb.scan(TableName=name)["Items"], key=lambda item: json.dumps(item, sort_keys=True))


def test_an_accepted_transaction_writes_every_item_and_copies_no_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.dynamodb.models.table import Table

    serialise_dynamodb_writes()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        _table(dynamodb, "rollback-c")
        dynamodb.put_item(TableName="rollback-c", Item={"id": {"S": "old"}, "v": {"N": "1"}})
        copies: list[str] = []

        def counted_copy(table: Any, memo: Any) -> Any:
            copies.append(table.name)
            return table

        monkeypatch.setattr(Table, "__deepcopy__", counted_copy, raising=False)

        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "rollback-c", "Item": {"id": {"S": "new"}}}},
                {
                    "Update": {
                        "TableName": "rollback-c",
                        "Key": {"id": {"S": "old"}},
                        "UpdateExpression": "SET v = :v",
                        "ExpressionAttributeValues": {":v": {"N": "2"}},
                    }
                },
            ]
        )

        assert _items(dynamodb, "rollback-c") == [{"id": {"S": "new"}}, {"id": {"S": "old"}, "v": {"N": "2"}}]
        assert copies == []


def test_a_transaction_copies_its_items_under_the_write_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write landing between the copy and a rollback would be undone with the transaction: the
    copies are taken while the transaction holds the lock every other write waits for."""
    from moto.dynamodb.models.table import Table

    from local.moto_fixes import _LOCK

    serialise_dynamodb_writes()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        _table(dynamodb, "rollback-d")
        held: list[bool] = []
        read = Table.get_item

        def get_item(table: Any, *args: Any, **kwargs: Any) -> Any:
            held.append(_LOCK._is_owned())  # type: ignore[attr-defined]
            return read(table, *args, **kwargs)

        monkeypatch.setattr(Table, "get_item", get_item)
        dynamodb.transact_write_items(
            TransactItems=[{"Put": {"TableName": "rollback-d", "Item": {"id": {"S": "x"}}}}]
        )

        assert held and all(held)


def test_a_cancelled_transaction_puts_back_exactly_the_items_it_touched() -> None:
    """roll_back_transactions_by_item: a cancelled transaction leaves every item as it was (an update undone,
    a new item gone, a deleted one back), on tables with and without a sort key; and the rollback
    comes from copies of those items, not of the tables (the table objects are the same)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    serialise_dynamodb_writes()
    with mock_aws():
        # Given a table with a hash key and one with a hash and a sort key, each with items
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        _table(dynamodb, "hashed")
        dynamodb.create_table(
            TableName="sorted",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.put_item(TableName="hashed", Item={"id": {"S": "kept"}, "v": {"N": "1"}})
        dynamodb.put_item(TableName="hashed", Item={"id": {"S": "taken"}})
        dynamodb.put_item(TableName="sorted", Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "v": {"N": "1"}})
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
        tables = {name: backend.tables[name] for name in ("hashed", "sorted")}

        def everything() -> list[Any]:
            return sorted(
                json.dumps(item, sort_keys=True)
                for name in tables
                for item in dynamodb.scan(TableName=name)["Items"]
            )

        before = everything()

        # When a transaction updates, creates and deletes items and then fails its last condition
        with pytest.raises(dynamodb.exceptions.TransactionCanceledException) as cancelled:
            dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": "hashed",
                            "Key": {"id": {"S": "kept"}},
                            "UpdateExpression": "SET v = :v",
                            "ExpressionAttributeValues": {":v": {"N": "2"}},
                        }
                    },
                    {"Put": {"TableName": "hashed", "Item": {"id": {"S": "new"}}}},
                    {"Put": {"TableName": "sorted", "Item": {"pk": {"S": "a"}, "sk": {"S": "2"}}}},
                    {"Delete": {"TableName": "sorted", "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}}},
                    {
                        "Put": {
                            "TableName": "hashed",
                            "Item": {"id": {"S": "taken"}},
                            "ConditionExpression": "attribute_not_exists(id)",
                        }
                    },
                ]
            )

        # Then it says which item refused, and every item is as it was, in the same tables
        reasons = [reason["Code"] for reason in cancelled.value.response["CancellationReasons"]]
        assert reasons == ["None", "None", "None", "None", "ConditionalCheckFailed"]
        assert everything() == before
        assert all(backend.tables[name] is table for name, table in tables.items())

        # ... also when the item that refuses comes first (the others are still checked)
        with pytest.raises(dynamodb.exceptions.TransactionCanceledException) as refused_first:
            dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": "hashed",
                            "Item": {"id": {"S": "taken"}},
                            "ConditionExpression": "attribute_not_exists(id)",
                        }
                    },
                    {"Put": {"TableName": "hashed", "Item": {"id": {"S": "new"}}}},
                    {
                        "Delete": {
                            "TableName": "sorted",
                            "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        reasons = [reason["Code"] for reason in refused_first.value.response["CancellationReasons"]]
        assert reasons == ["ConditionalCheckFailed", "None", "ConditionalCheckFailed"]
        assert everything() == before

        # ... and a transaction that holds is written whole
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "hashed", "Item": {"id": {"S": "new"}}}},
                {"Delete": {"TableName": "sorted", "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}}},
            ]
        )
        assert "new" in json.dumps(dynamodb.scan(TableName="hashed")["Items"])
        assert dynamodb.scan(TableName="sorted")["Items"] == []


def test_queries_and_scans_meet_concurrent_writes_without_failing() -> None:
    """snapshot_table_reads: a Query or Scan iterates the items while another thread adds some;
    unpatched, moto fails the read now and then with 'dictionary changed size during iteration'."""
    import threading

    serialise_dynamodb_writes()
    with mock_aws():
        # Given a table with an index, and a thread adding items to it all the time
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="busy",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[
                {"AttributeName": "id", "AttributeType": "S"},
                {"AttributeName": "kind", "AttributeType": "S"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by-kind",
                    "KeySchema": [{"AttributeName": "kind", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        stop = threading.Event()

        def write() -> None:
            n = 0
            while not stop.is_set() and n < 2000:  # bounded: each read costs the table's size
                dynamodb.put_item(TableName="busy", Item={"id": {"S": f"i{n}"}, "kind": {"S": "k"}})
                n += 1

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            # When reads run meanwhile, Then every one answers, with what was there
            for _ in range(60):
                queried = dynamodb.query(
                    TableName="busy",
                    IndexName="by-kind",
                    KeyConditionExpression="kind = :k",
                    ExpressionAttributeValues={":k": {"S": "k"}},
                    Select="COUNT",
                )
                scanned = dynamodb.scan(TableName="busy", Select="COUNT")
                assert scanned["Count"] >= queried["Count"]  # items are only added: the later read sees more
        finally:
            stop.set()
            writer.join(10)


def test_a_callback_skips_an_execution_that_has_no_worker_yet() -> None:
    """callbacks_skip_unstarted_executions: StartExecution lists an execution as running a moment
    before it has a worker, and the worker has its environment a moment later still; a
    SendTaskSuccess in that moment must not fail on it."""
    from types import SimpleNamespace

    from botocore.exceptions import ClientError
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    from local.moto_fixes import callbacks_skip_unstarted_executions

    callbacks_skip_unstarted_executions()
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        stepfunctions = boto3.client("stepfunctions", region_name="us-east-1")
        arn = stepfunctions.create_state_machine(
            name="callbacks",
            definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
            roleArn="arn:aws:iam::123456789012:role/callbacks",
        )["stateMachineArn"]
        backend = stepfunctions_parser_backends["123456789012"]["us-east-1"]
        machine = next(sm for sm in backend.state_machines if sm.arn == arn)
        machine.executions.append(SimpleNamespace(status=ExecutionStatus.RUNNING, exec_worker=None))
        machine.executions.append(
            SimpleNamespace(status=ExecutionStatus.RUNNING, exec_worker=SimpleNamespace(env=None))
        )

        for call in (
            lambda: stepfunctions.send_task_success(taskToken="no-such-token", output="{}"),
            lambda: stepfunctions.send_task_failure(taskToken="no-such-token"),
            lambda: stepfunctions.send_task_heartbeat(taskToken="no-such-token"),
        ):
            with pytest.raises(ClientError) as refused:
                call()
            assert refused.value.response["Error"]["Code"] in ("InvalidToken", "TaskDoesNotExist")
