"""Creating the template's tables, buckets and state machines on moto: one place for the local
stack, the test fixtures and the benchmarks, so they cannot drift apart from each other; and the
boto3 clients they use, made once."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from local.template import LocalTemplate

WORKFLOW_ROLE_ARN = "arn:aws:iam::123456789012:role/imagetasks-local-role"


def client_cache(make: Callable[..., Any]) -> Callable[..., Any]:
    """`make(*key)` (a boto3 client) made once per key, under a lock: making a client costs more CPU
    than most calls it makes, and is not thread-safe (using one is)."""
    made, lock = functools.cache(make), threading.Lock()

    def client(*key: str) -> Any:
        with lock:
            return made(*key)

    return client


def create_tables(template: LocalTemplate, dynamodb: Any) -> None:
    """Every table with its indexes, and its TTL setting (stored by moto, applied by the sweeper)."""
    for table in template.tables.values():
        dynamodb.create_table(**table.create_kwargs)
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=table.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )


def create_buckets(template: LocalTemplate, s3: Any) -> None:
    """Every bucket, without notifications (the local stack adds those once its functions exist)."""
    for bucket in template.buckets.values():
        s3.create_bucket(Bucket=bucket.name)


def create_state_machines(
    template: LocalTemplate, stepfunctions: Any, role_arn: str = WORKFLOW_ROLE_ARN
) -> dict[str, str]:
    """Every state machine from its definition; logical id → ARN."""
    return {
        machine.logical_id: stepfunctions.create_state_machine(
            name=machine.name, definition=machine.definition, roleArn=role_arn, type=machine.type
        )["stateMachineArn"]
        for machine in template.state_machines.values()
    }
