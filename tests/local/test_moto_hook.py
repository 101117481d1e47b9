"""The hook that makes moto run our handlers in-process.

`LambdaFunction._invoke_lambda` is a private moto method: if an upgrade renames it or stops routing an
invocation path through it, these tests fail loudly instead of the local stack silently running nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.lambda_runtime import HandlerRunner, MotoLambdaHook
from local.template import FunctionSpec

ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": []})

RECORDER = """
import json, os
from pathlib import Path

def lambda_handler(event, context):
    Path(os.environ["RECORD_FILE"]).write_text(json.dumps(event))
    return {"greeting": os.environ["GREETING"], "function": context.function_name}
"""

FLAKY = """
import os
from pathlib import Path

class TransientError(Exception):
    pass

def lambda_handler(event, context):
    attempts = Path(os.environ["ATTEMPTS_FILE"])
    attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
    raise TransientError("the disk is busy")
"""


def _spec(tmp_path: Path, logical_id: str, source: str, environment: dict[str, str]) -> FunctionSpec:
    folder = tmp_path / logical_id
    folder.mkdir()
    (folder / "app.py").write_text(source)  # both functions have an app.py: they must not collide
    name = f"hooktest-{logical_id.lower()}"
    return FunctionSpec(
        logical_id=logical_id,
        name=name,
        arn=f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
        code_dir=folder,
        handler="app.lambda_handler",
        runtime="python3.13",
        timeout_seconds=10,
        memory_mb=128,
        environment=environment,
        layer_paths=[],
    )


@pytest.fixture
def functions(tmp_path):
    recorder = _spec(
        tmp_path, "Recorder", RECORDER, {"GREETING": "hello", "RECORD_FILE": str(tmp_path / "event.json")}
    )
    # Same variable, another value: each handler must see its own.
    flaky = _spec(
        tmp_path, "Flaky", FLAKY, {"GREETING": "bonjour", "ATTEMPTS_FILE": str(tmp_path / "attempts")}
    )
    return {"Recorder": recorder, "Flaky": flaky}


@pytest.fixture
def hooked(functions):
    """moto with the ASL interpreter on, both functions created, and the hook installed."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        hook = MotoLambdaHook(HandlerRunner(functions.values()))
        hook.install()
        try:
            role = boto3.client("iam").create_role(RoleName="hooktest", AssumeRolePolicyDocument=ROLE_POLICY)
            lambda_client = boto3.client("lambda")
            for spec in functions.values():
                lambda_client.create_function(
                    FunctionName=spec.name,
                    Runtime=spec.runtime,
                    Role=role["Role"]["Arn"],
                    Handler=spec.handler,
                    Code={
                        "ZipFile": b"PK\x05\x06" + b"\x00" * 18
                    },  # an empty zip: the code runs from its folder
                )
            yield hook, role["Role"]["Arn"]
        finally:
            hook.uninstall()


def _wait_for_execution(sfn, arn: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        execution = sfn.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.1)
    raise AssertionError(f"execution {arn} did not end")


def _bucket_notifying(bucket: str, function: FunctionSpec, prefix: str | None = None) -> Any:
    """A new bucket whose object-created events (under `prefix`, if given) invoke `function`."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    configuration: dict[str, Any] = {"LambdaFunctionArn": function.arn, "Events": ["s3:ObjectCreated:*"]}
    if prefix is not None:
        configuration["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": [configuration]}
    )
    return s3


def test_a_direct_invoke_runs_the_handler_with_its_own_environment(hooked, functions):
    hook, _ = hooked
    calls_before = hook.calls

    response = boto3.client("lambda").invoke(
        FunctionName=functions["Recorder"].name, Payload=json.dumps({"task_id": "t1"})
    )

    assert json.loads(response["Payload"].read()) == {"greeting": "hello", "function": "hooktest-recorder"}
    assert hook.calls == calls_before + 1, "moto no longer calls LambdaFunction._invoke_lambda"


def test_a_crash_returns_lambdas_error_payload(hooked, functions):
    response = boto3.client("lambda").invoke(FunctionName=functions["Flaky"].name, Payload=b"{}")

    payload = json.loads(response["Payload"].read())
    assert "FunctionError" in response
    assert payload["errorType"] == "TransientError"
    assert payload["errorMessage"] == "the disk is busy"
    assert payload["stackTrace"]


def test_a_step_functions_task_goes_through_the_hook_and_retry_catch_see_the_error_name(
    hooked, functions, tmp_path
):
    hook, role_arn = hooked
    definition = {
        "StartAt": "Record",
        "States": {
            "Record": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": functions["Recorder"].arn, "Payload.$": "$"},
                "ResultSelector": {"greeting.$": "$.Payload.greeting"},
                "ResultPath": "$.recorded",
                "Next": "Flaky",
            },
            "Flaky": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": functions["Flaky"].arn, "Payload.$": "$"},
                "Retry": [{"ErrorEquals": ["TransientError"], "IntervalSeconds": 1, "MaxAttempts": 1}],
                "Catch": [{"ErrorEquals": ["TransientError"], "ResultPath": "$.error", "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(name="hooktest", definition=json.dumps(definition), roleArn=role_arn)
    calls_before = hook.calls

    started = sfn.start_execution(
        stateMachineArn=machine["stateMachineArn"], name="run-1", input='{"task_id": "t1"}'
    )
    execution = _wait_for_execution(sfn, started["executionArn"])

    assert execution["status"] == "SUCCEEDED", execution
    output = json.loads(execution["output"])
    assert output["recorded"] == {"greeting": "hello"}
    assert output["error"]["Error"] == "TransientError"
    assert (tmp_path / "attempts").read_text() == "xx"  # the first call and one retry
    assert hook.calls == calls_before + 3, "moto's ASL interpreter no longer invokes through the hook"


def test_an_s3_notification_goes_through_the_hook(hooked, functions, tmp_path):
    hook, _ = hooked
    s3 = _bucket_notifying("hooktest-uploads", functions["Recorder"], prefix="uploads/")
    calls_before = hook.calls

    s3.put_object(Bucket="hooktest-uploads", Key="uploads/p1/a disk.qcow2", Body=b"data")
    s3.put_object(Bucket="hooktest-uploads", Key="elsewhere/b.qcow2", Body=b"data")  # filtered out

    hook.wait_for_notifications()
    assert hook.calls == calls_before + 1, "moto no longer runs S3 notifications through the hook"
    event = json.loads((tmp_path / "event.json").read_text())
    assert event["Records"][0]["s3"]["object"]["key"] == "uploads%2Fp1%2Fa+disk.qcow2"  # quote_plus, as AWS


def test_a_crash_in_an_s3_triggered_handler_is_logged_with_its_traceback(hooked, functions, caplog):
    hook, _ = hooked
    s3 = _bucket_notifying("hooktest-crash", functions["Flaky"])

    s3.put_object(Bucket="hooktest-crash", Key="x", Body=b"data")  # moto swallows the error itself
    hook.wait_for_notifications()

    logged = "\n".join(record.getMessage() for record in caplog.records if record.name == "local.lambda")
    assert "Traceback" in logged and "TransientError: the disk is busy" in logged


def test_the_hook_is_gone_after_uninstall(functions):
    from moto.awslambda.models import LambdaFunction

    original = LambdaFunction._invoke_lambda
    hook = MotoLambdaHook(HandlerRunner(functions.values()))

    hook.install()
    hook.uninstall()

    assert LambdaFunction._invoke_lambda is original


STATEFUL = """
import sys
import threading

current = None  # module-level state, as Powertools' resolver keeps the current request
# Shared by every instance (each has its own copy of this module): where both meet.
both_inside = sys.__dict__.setdefault("_hooktest_both_inside", threading.Barrier(2, timeout=10))

def lambda_handler(event, context):
    global current
    current = event["n"]
    if event.get("together"):
        both_inside.wait()  # the other invocation is running now too
    return {"n": current}
"""


def test_concurrent_invocations_of_one_function_run_in_separate_instances(tmp_path):
    import threading

    spec = _spec(tmp_path, "Stateful", STATEFUL, {})
    runner = HandlerRunner([spec])
    results: dict[int, Any] = {}

    def call(n: int) -> None:
        results[n] = runner.invoke(spec, {"n": n, "together": True}).result()

    threads = [threading.Thread(target=call, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    # Each saw its own module state (one instance each), as two Lambda instances would
    assert results == {1: {"n": 1}, 2: {"n": 2}}
    assert runner.instances("Stateful") == 2
    assert runner.invoke(spec, {"n": 3}).result() == {"n": 3}
    assert runner.instances("Stateful") == 2  # an idle instance is reused, none is started


SIBLING_USER = """
import state  # a sibling module, as an API's routers are

def lambda_handler(event, context):
    state.seen.append(event["n"])
    return {"seen": state.seen}
"""


def test_an_instance_never_shares_a_sibling_module_someone_imported_by_its_plain_name(tmp_path):
    import importlib
    import sys

    spec = _spec(tmp_path, "Sibling", SIBLING_USER, {})
    (spec.code_dir / "state.py").write_text("seen = []\n")
    # Given the folder's sibling already imported under its plain name (as a test importing a
    # handler directly leaves it)
    sys.path.insert(0, str(spec.code_dir))
    try:
        direct = importlib.import_module("state")
    finally:
        sys.path.remove(str(spec.code_dir))
    try:
        # When the runner starts an instance and calls it
        result = HandlerRunner([spec]).invoke(spec, {"n": 1}).result()
        # Then the instance used its own copy; the plain-named module is untouched and still there
        assert result == {"seen": [1]}
        assert direct.seen == []
        assert sys.modules["state"] is direct
    finally:
        sys.modules.pop("state", None)


ROUTED = """
import sys
import threading

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

app = APIGatewayRestResolver()
both_resolving = sys.__dict__.setdefault("_hooktest_both_resolving", threading.Barrier(2, timeout=10))


@app.get("/<name>")
def show(name):
    both_resolving.wait()  # the other request is being answered too: both resolves have begun
    return {"name": name, "path": app.current_event.path}


def lambda_handler(event, context):
    return app.resolve(event, context)
"""


def test_concurrent_requests_each_read_their_own_request_in_a_powertools_resolver(tmp_path):
    import threading

    from tests.support import api_event

    spec = _spec(tmp_path, "Routed", ROUTED, {})
    runner = HandlerRunner([spec])
    results: dict[str, Any] = {}

    def call(name: str) -> None:
        results[name] = json.loads(runner.invoke(spec, api_event("GET", f"/{name}")).result()["body"])

    threads = [threading.Thread(target=call, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    # Each request, answered in its own instance, saw its own path (Powertools keeps it class-wide)
    assert results == {"a": {"name": "a", "path": "/a"}, "b": {"name": "b", "path": "/b"}}


SLOW_TO_LOAD = """
import sys
import threading

# The first instance loads at once; a later one waits, while loading, until the test lets it go.
loads = sys.__dict__.setdefault("_hooktest_loads", [])
release = sys.__dict__.setdefault("_hooktest_release", threading.Event())
loads.append(1)
if len(loads) > 1:
    release.wait(10)

def lambda_handler(event, context):
    return {"n": event["n"]}
"""


def test_an_idle_instance_answers_while_another_instance_is_loading(tmp_path):
    import sys
    import threading

    # Given a function with one idle instance, and a second one still loading (a concurrent call)
    spec = _spec(tmp_path, "SlowToLoad", SLOW_TO_LOAD, {})
    runner = HandlerRunner([spec])
    sys.__dict__.pop("_hooktest_loads", None)
    release = sys.__dict__.setdefault("_hooktest_release", threading.Event())
    release.clear()
    try:
        first = runner.invoke(spec, {"n": 1}).result()
        held = runner._acquire(spec)  # the idle instance, taken as a running call would
        loading = threading.Thread(target=lambda: runner.invoke(spec, {"n": 2}))
        loading.start()
        while runner.instances("SlowToLoad") < 2:
            time.sleep(0.01)

        # When the running call ends and another arrives while the second instance still loads
        runner._release(spec, held)
        answered = runner.invoke(spec, {"n": 3}).result()

        # Then the idle instance answered it (with one lock for both, it waited for the load)
        assert first == {"n": 1} and answered == {"n": 3}
        assert loading.is_alive()
        assert runner.instances("SlowToLoad") == 2
    finally:
        release.set()
    loading.join(10)
    assert not loading.is_alive()
