"""Each function's role, as `sam deploy` creates it, against the calls its code makes.

The roles come from aws-sam-translator (local/iam.py) and moto enforces them: a call the template
does not allow fails here as it would on AWS. Each IAM gap found on a deployment has a test that
fails without its policy fix; the denials show the enforcement is real.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local import iam
from local.template import load_template
from tests.support import ROOT

TEMPLATE = ROOT / "template.yaml"
KEYSTONE_SECRET = "imagetasks-keystone-service"


@pytest.fixture(scope="module")
def roles() -> dict[str, iam.Role]:
    """The translated roles, with a Keystone secret configured (the authorizer's policy depends on it)."""
    template = load_template(TEMPLATE, {"KeystoneCredentialsSecret": KEYSTONE_SECRET})
    return iam.template_roles(template)


@pytest.fixture
def enforced(aws: dict[str, str], roles: dict[str, iam.Role]) -> Iterator[dict[str, iam.Credentials]]:
    """moto with the template's resources, every role created and assumed, IAM enforced."""
    credentials = iam.create_roles(roles, {}, boto3.client("iam"), boto3.client("sts"))
    iam.enforce()
    try:
        yield credentials
    finally:
        iam.relax()


def client_of(credentials: iam.Credentials, service: str) -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
    )


def unfinished_upload(bucket: str, key: str) -> str:
    """An interrupted multipart upload, as a failed fetch or copy leaves it (made by the operator)."""
    s3 = boto3.client("s3")
    upload_id: str = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
    return upload_id


def assert_denied(call: Any, **kwargs: Any) -> None:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    response = raised.value.response
    # moto's JSON services answer a bare 403 where AWS names AccessDeniedException
    assert response["Error"]["Code"] in {"AccessDenied", "AccessDeniedException", "403"}
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403


# ------------------------------------------------------------------ gaps found on a deployment


def test_the_import_may_remove_the_upload_it_imported(enforced, aws):
    # Given an uploaded image
    uploads = aws["UPLOADS_BUCKET"]
    boto3.client("s3").put_object(Bucket=uploads, Key="uploads/p1/disk.qcow2", Body=b"image")
    s3 = client_of(enforced["ImportTaskFunction"], "s3")
    # When the import function removes it after the import, Then S3 allows it
    s3.delete_object(Bucket=uploads, Key="uploads/p1/disk.qcow2")
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=uploads)


def test_the_import_may_read_and_remove_exactly_the_upload_it_imported(enforced, aws):
    # Given an uploaded image, known by its ETag
    uploads = aws["UPLOADS_BUCKET"]
    etag = boto3.client("s3").put_object(Bucket=uploads, Key="uploads/p1/disk.qcow2", Body=b"image")["ETag"]
    s3 = client_of(enforced["ImportTaskFunction"], "s3")
    # When the import function reads it and removes it on condition (If-Match), Then S3 allows both
    assert s3.get_object(Bucket=uploads, Key="uploads/p1/disk.qcow2", IfMatch=etag)["Body"].read() == b"image"
    s3.delete_object(Bucket=uploads, Key="uploads/p1/disk.qcow2", IfMatch=etag)
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=uploads)
    # ...and nothing outside uploads/, where the trigger does not listen
    boto3.client("s3").put_object(Bucket=uploads, Key="elsewhere/disk.qcow2", Body=b"image")
    assert_denied(s3.delete_object, Bucket=uploads, Key="elsewhere/disk.qcow2")


@pytest.mark.parametrize("function", ["TaskStatusFunction", "ReconcileFunction"])
def test_the_failure_clean_up_removes_staged_data_and_unfinished_uploads(enforced, aws, function):
    from imagetasks.adapters.s3_objects import S3Objects

    # Given what a failed import left in staging: an object and an interrupted multipart upload
    staging = aws["STAGING_BUCKET"]
    boto3.client("s3").put_object(Bucket=staging, Key="task-1/source", Body=b"partial")
    unfinished_upload(staging, "task-1/image")
    # When the clean-up runs with the function's role
    S3Objects(client_of(enforced[function], "s3")).delete_prefix(staging, "task-1/")
    # Then nothing is left, not even the multipart upload's parts
    s3 = boto3.client("s3")
    assert "Contents" not in s3.list_objects_v2(Bucket=staging, Prefix="task-1/")
    assert not s3.list_multipart_uploads(Bucket=staging).get("Uploads")


@pytest.mark.parametrize(
    ("function", "bucket_variable"),
    [
        ("ImportTaskFunction", "STAGING_BUCKET"),
        ("ImportTaskFunction", "IMAGES_BUCKET"),
        ("ConvertTaskFunction", "IMAGES_BUCKET"),
        ("ExportTaskFunction", "EXPORTS_BUCKET"),
    ],
)
def test_a_failed_transfer_may_abort_its_multipart_upload(enforced, aws, function, bucket_variable):
    bucket = aws[bucket_variable]
    upload_id = unfinished_upload(bucket, "images/abandoned")
    client_of(enforced[function], "s3").abort_multipart_upload(
        Bucket=bucket, Key="images/abandoned", UploadId=upload_id
    )
    assert not boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_the_authorizer_reads_the_keystone_secret_and_no_other(enforced):
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name=KEYSTONE_SECRET, SecretString='{"username": "u", "password": "p"}')
    secrets.create_secret(Name="someone-elses-secret", SecretString="do not read")
    authorizer = client_of(enforced["AuthorizerFunction"], "secretsmanager")
    assert authorizer.get_secret_value(SecretId=KEYSTONE_SECRET)["SecretString"].startswith("{")
    assert_denied(authorizer.get_secret_value, SecretId="someone-elses-secret")


def test_without_a_keystone_secret_the_authorizer_reads_no_secret_at_all():
    template = load_template(TEMPLATE)
    authorizer = iam.template_roles(template)["AuthorizerFunction"]
    assert authorizer.inline_policies == {}


# ------------------------------------------------------------------ the enforcement itself


def test_a_function_cannot_touch_what_its_role_does_not_name(enforced, aws):
    api = enforced["TasksApiFunction"]
    assert_denied(client_of(api, "s3").put_object, Bucket=aws["IMAGES_BUCKET"], Key="images/x", Body=b"x")
    assert_denied(client_of(api, "dynamodb").delete_table, TableName=aws["TASKS_TABLE"])
    assert_denied(
        client_of(api, "dynamodb").put_item, TableName=aws["SLOTS_TABLE"], Item={"id": {"S": "forged"}}
    )


def test_a_transaction_is_authorised_item_by_item(enforced, aws):
    # The API may write tasks but not the slots: a transaction touching both is refused as a whole
    dynamodb = client_of(enforced["TasksApiFunction"], "dynamodb")
    items = [
        {"Put": {"TableName": aws["TASKS_TABLE"], "Item": {"id": {"S": "t1"}}}},
        {"Put": {"TableName": aws["SLOTS_TABLE"], "Item": {"id": {"S": "task-slots"}}}},
    ]
    assert_denied(dynamodb.transact_write_items, TransactItems=items)
    dynamodb.transact_write_items(TransactItems=items[:1])


@pytest.mark.parametrize("function", ["TasksApiFunction", "ReconcileFunction", "TaskStatusFunction"])
def test_the_functions_that_fail_tasks_may_queue_a_failed_imports_image_again(enforced, aws, function):
    # Lifecycle.before_failure: the image goes back to queued before the failure is written
    dynamodb = client_of(enforced[function], "dynamodb")
    item = {"id": {"S": "i1"}, "record": {"S": "image"}}
    dynamodb.transact_write_items(TransactItems=[{"Put": {"TableName": aws["IMAGES_TABLE"], "Item": item}}])


def test_the_images_api_may_update_an_image_and_its_list_rows_conditionally(enforced, aws):
    # Given a stored image (written by the operator), and the images API's role
    from datetime import timedelta

    from imagetasks.adapters.images_table import ImagesTable
    from imagetasks.domain import clock
    from imagetasks.domain.images import new_image

    image = new_image(
        image_id="0b5c1e7e-9c1a-4d8e-8f0e-2a6f1d3c4b5a", owner="p", name="before", disk_format="raw",
        container_format="bare", size=1, virtual_size=1, checksum="0" * 32, os_hash_value="0" * 128,
        bucket=aws["IMAGES_BUCKET"], key="images/x", task_id="t", properties={"k": "v"},
    )  # fmt: skip
    assert ImagesTable(aws["IMAGES_TABLE"]).create(image)
    as_api = ImagesTable(aws["IMAGES_TABLE"], client_of(enforced["ImagesApiFunction"], "dynamodb"))
    # When it renames the image (PATCH): a conditional transaction moving the index rows
    renamed = as_api.update(
        image.id,
        lambda current: current.model_copy(
            update={"name": "after", "updated_at": current.updated_at + timedelta(seconds=1)}
        ),
    )
    # Then its role allowed every item of it
    assert renamed.name == "after" and as_api.get(image.id) == renamed
    assert clock.to_stored(renamed.updated_at) > clock.to_stored(image.updated_at)


def test_the_workflow_role_includes_policies_attached_from_outside_it(roles):
    assert "TaskWorkflowLogDelivery" in roles["TaskWorkflow"].inline_policies


def test_the_workflow_may_invoke_its_functions_and_no_other(roles):
    workflow = roles["TaskWorkflow"]
    resources = {
        resource
        for document in workflow.inline_policies.values()
        for statement in document["Statement"]
        if "lambda:InvokeFunction" in statement["Action"]
        for resource in (
            [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        )
    }
    names = {resource.rsplit(":function:", 1)[1] for resource in resources}
    # Unqualified ARNs, as the definition names them: no version or alias (`:*`) of them either
    assert names == {
        f"imagetasks-local-{name.lower()}"
        for name in ("TaskStatusFunction", "ImportTaskFunction", "ConvertTaskFunction", "ExportTaskFunction")
    }


#: Actions AWS authorises on `*` only (they take no resource): Step Functions' log delivery, and
#: SendTaskSuccess with a service integration's task token (the token names no resource).
RESOURCELESS_ACTIONS = {
    "states:SendTaskSuccess",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}


def test_every_statement_names_its_resources(roles):
    """Least privilege: no `*` resource, and no wildcard over a whole service's resources."""
    for owner, role in roles.items():
        for name, document in role.inline_policies.items():
            for statement in document["Statement"]:
                actions = statement["Action"]
                if set([actions] if isinstance(actions, str) else actions) <= RESOURCELESS_ACTIONS:
                    continue
                resources = statement["Resource"]
                for resource in [resources] if isinstance(resources, str) else resources:
                    assert resource != "*", f"{owner} {name}: {statement['Action']} on every resource"
                    if re.search(r":execution:[^:*]+:\*$", resource):
                        continue  # the executions of one named state machine: as narrow as it gets
                    assert not resource.endswith((":*", ":secret:*", ":table/*")), (
                        f"{owner} {name}: {resource}"
                    )


# ------------------------------------------------------------------ task events

TASK_ENDERS = ("TaskStatusFunction", "ReconcileFunction", "TasksApiFunction", "UploadTriggerFunction")
TASK_EVENT = {"Source": "imagetasks", "DetailType": "Task Succeeded", "Detail": '{"id": "t1"}'}


@pytest.mark.parametrize("function", TASK_ENDERS)
def test_the_functions_that_end_tasks_may_announce_it_on_the_bus_and_no_other(enforced, function):
    boto3.client("events").create_event_bus(Name="someone-elses-bus")
    events = client_of(enforced[function], "events")
    answer = events.put_events(Entries=[{**TASK_EVENT, "EventBusName": "default"}])
    assert answer["FailedEntryCount"] == 0
    assert_denied(events.put_events, Entries=[{**TASK_EVENT, "EventBusName": "someone-elses-bus"}])


@pytest.mark.parametrize("function", TASK_ENDERS)
def test_a_task_ender_may_put_only_events_of_the_services_own_source(enforced, function):
    events = client_of(enforced[function], "events")
    assert_denied(events.put_events, Entries=[{**TASK_EVENT, "Source": "aws.states"}])
    # One entry of another source refuses the whole request, as AWS authorises entry by entry
    assert_denied(events.put_events, Entries=[TASK_EVENT, {**TASK_EVENT, "Source": "someone.else"}])


def test_no_other_function_may_put_events(enforced):
    for function in set(enforced) - set(TASK_ENDERS) - {"TaskWorkflow"}:
        assert_denied(client_of(enforced[function], "events").put_events, Entries=[TASK_EVENT])


def test_event_grants_are_put_events_on_the_deployers_bus_only(roles):
    def actions(statement: dict[str, Any]) -> list[str]:
        return [statement["Action"]] if isinstance(statement["Action"], str) else list(statement["Action"])

    granted = {
        (owner, action, str(statement["Resource"]))
        for owner, role in roles.items()
        for document in role.inline_policies.values()
        for statement in document["Statement"]
        for action in actions(statement)
        if action.startswith("events:")
    }
    bus = "arn:aws:events:us-east-1:123456789012:event-bus/default"
    assert granted == {(owner, "events:PutEvents", bus) for owner in TASK_ENDERS}
