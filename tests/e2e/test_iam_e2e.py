"""The local stack runs every function with its own role's credentials, and moto enforces them."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError


@pytest.mark.parametrize("function", ["TasksApiFunction", "ImportTaskFunction", "TaskStatusFunction"])
def test_a_handler_calls_aws_as_its_own_role(local_stack, function):
    # When code running as the function creates a client, as a handler does
    with local_stack.stack.handlers.as_function(function):
        identity = boto3.client("sts").get_caller_identity()
    # Then AWS sees the function's role, not the operator
    assert f":assumed-role/imagetasks-local-{function}/" in identity["Arn"]


def test_a_handler_is_refused_what_its_role_does_not_allow(local_stack):
    with local_stack.stack.handlers.as_function("TasksApiFunction"):
        s3 = boto3.client("s3")
        with pytest.raises(ClientError) as raised:
            s3.put_object(Bucket=local_stack.buckets["ImagesBucket"], Key="images/forged", Body=b"x")
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
