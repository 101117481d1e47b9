"""Container mode itself: every invocation reaches the built artifact, EventBridge targets included.

These run only with IMAGETASKS_CONTAINERS=1 (`make test` runs the `artifact` tests that way); the other
`artifact` tests (import → convert → export, an upload) prove the application works there.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local.container_runner import ContainerRunner
from local.template import REGION
from tests.e2e.conftest import CONTAINERS
from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.image_corpus import make_qcow2, make_raw, require_qemu_img

pytestmark = [
    pytest.mark.artifact,
    pytest.mark.skipif(not CONTAINERS, reason="container mode only (IMAGETASKS_CONTAINERS=1)"),
]


def container_runner(local_stack: Any) -> ContainerRunner:
    runner = local_stack.stack.runner
    assert isinstance(runner, ContainerRunner)
    return runner


def test_an_import_runs_every_function_it_needs_in_containers_and_none_in_process(
    local_stack: Any, image_server: Any
) -> None:
    require_qemu_img()
    runner = container_runner(local_stack)
    before = runner.invocations.copy()
    image = make_qcow2(image_server.root)

    task = create_task(local_stack, import_body(image_server.url(image.name), "qcow2"), project="cm-project")
    finished, _ = wait_for_task(local_stack, task["id"], project="cm-project")

    assert finished["status"] == "success", finished["message"]
    ran = runner.invocations - before
    for logical_id in ("AuthorizerFunction", "TasksApiFunction", "TaskStatusFunction", "ImportTaskFunction"):
        assert ran[logical_id] > 0, f"{logical_id} did not run in its container: {dict(ran)}"
        # Each container fetched its own role's credentials: the bootstrap refuses to run without them.
        assert logical_id in runner.credentials_server.requests
    in_process = [name for name in sys.modules if name.startswith("_local_lambda_")]
    assert in_process == [], f"handlers were imported in the test process: {in_process}"


def test_an_aborted_execution_reaches_the_reconcile_function_in_its_container(
    local_stack: Any, image_server: Any
) -> None:
    runner = container_runner(local_stack)
    before = runner.invocations["ReconcileFunction"]
    image = make_raw(image_server.root)
    held = image_server.root / "held.raw"
    image.rename(held)
    requested, release = image_server.hold(held.name)
    try:
        task = create_task(local_stack, import_body(image_server.url(held.name), "raw"), project="cm-abort")
        assert requested.wait(60), "the import step never fetched its source"
        execution = f"{local_stack.state_machines['TaskWorkflow']}:{task['id']}"
        local_stack.client("stepfunctions").stop_execution(
            executionArn=execution.replace(":stateMachine:", ":execution:"), error="Operator", cause="a test"
        )
    finally:
        release.set()
    finished, _ = wait_for_task(local_stack, task["id"], project="cm-abort")

    assert finished["status"] == "failure"
    assert finished["message"] == "The task's workflow was stopped before the task finished."
    deadline = time.monotonic() + 30
    while runner.invocations["ReconcileFunction"] == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert runner.invocations["ReconcileFunction"] > before, "EventBridge did not reach the container"


def test_the_credentials_a_container_gets_are_its_roles_and_the_endpoint_enforces_them(
    local_stack: Any,
) -> None:
    # What the bootstrap of the TasksApiFunction container receives, used as it uses it: over HTTP.
    served = json.loads(
        urllib.request.urlopen(
            f"{container_runner(local_stack).credentials_server.url}/TasksApiFunction"
        ).read()
    )
    session = boto3.Session(
        aws_access_key_id=served["AccessKeyId"],
        aws_secret_access_key=served["SecretAccessKey"],
        aws_session_token=served["SessionToken"],
        region_name=REGION,
    )
    identity = session.client("sts", endpoint_url=local_stack.aws_url).get_caller_identity()
    assert ":assumed-role/imagetasks-local-TasksApiFunction/" in identity["Arn"]
    with pytest.raises(ClientError) as raised:
        session.client("s3", endpoint_url=local_stack.aws_url).put_object(
            Bucket=local_stack.buckets["ImagesBucket"], Key="images/forged", Body=b"x"
        )
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
