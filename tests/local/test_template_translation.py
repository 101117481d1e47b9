"""The local stack reads template.yaml as AWS does: through aws-sam-translator (local/template.py).

Globals, event sources and the API come from the CloudFormation SAM makes of the template, so the
local stack cannot read a property differently from `sam deploy`; these tests show each of them arrive,
and that SAM features the local stack does not emulate are skipped cleanly rather than misread.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from local import iam, template
from local.template import (
    LOCAL_PARAMETER_OVERRIDES,
    EventRule,
    LocalTemplate,
    Route,
    S3Notification,
    load_template,
    load_yaml,
)
from tests.support import ROOT

AUTHORIZER_HEADERS = ("X-Auth-Token",)


def test_globals_are_merged_by_sam(local_template: LocalTemplate) -> None:
    translated = local_template.translated["Resources"]
    # SAM wrote the Globals into each function: nothing here merges them any more.
    assert translated["ImagesApiFunction"]["Properties"]["MemorySize"] == 512
    images = local_template.functions["ImagesApiFunction"]
    imports = local_template.functions["ImportTaskFunction"]
    assert (images.timeout_seconds, images.memory_mb, images.runtime) == (30, 512, "python3.13")
    assert (imports.timeout_seconds, imports.memory_mb) == (900, 1769)  # its own values win
    for spec in local_template.functions.values():
        assert spec.environment["TASKS_TABLE"] == local_template.tables["TasksTable"].name
        assert spec.environment["POWERTOOLS_SERVICE_NAME"] == "imagetasks"
        assert spec.code_dir.parent == ROOT / "functions"
    # a function's own variables beside the Globals' ones
    assert imports.environment["IMPORT_ALLOW_LOOPBACK"] == "false"
    assert local_template.functions["AuthorizerFunction"].environment["AUTH_MODE"] == "oidc"
    # the Globals' layers first, then the function's own (the qemu layer has no python/ to import)
    assert imports.layer_paths[0] == (ROOT / "layers" / "common" / "python").resolve()


def test_the_s3_event_is_the_buckets_notification(local_template: LocalTemplate) -> None:
    trigger = local_template.functions["UploadTriggerFunction"]
    assert local_template.buckets["UploadsBucket"].notifications == [
        S3Notification("UploadTriggerFunction", trigger.arn, ["s3:ObjectCreated:*"], "uploads/", None)
    ]
    others = [b for lid, b in local_template.buckets.items() if lid != "UploadsBucket"]
    assert all(not bucket.notifications for bucket in others)


def test_the_eventbridge_event_is_a_rule_on_the_workflows_executions(local_template: LocalTemplate) -> None:
    workflow = local_template.state_machines["TaskWorkflow"]
    assert local_template.event_rules == [
        EventRule(
            name="ReconcileFunctionExecutionEnded",
            function_logical_id="ReconcileFunction",
            pattern={
                "source": ["aws.states"],
                "detail-type": ["Step Functions Execution Status Change"],
                "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": [workflow.arn]},
            },
        ),
        EventRule(
            name="ReconcileFunctionSlotSweep",
            function_logical_id="ReconcileFunction",
            pattern=None,
            schedule_seconds=60,
        ),
    ]


def _api_events(source: dict[str, Any]) -> set[Route]:
    """Every Api event of the source template, with the authorizer SAM gives it (the API's default
    unless the event says NONE) and that authorizer's cache (ReauthorizeEvery: AuthorizerCacheSeconds,
    300 by default)."""
    routes = set()
    for logical_id, resource in source["Resources"].items():
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if event["Type"] != "Api":
                continue
            props = event["Properties"]
            public = (props.get("Auth") or {}).get("Authorizer") == "NONE"
            routes.add(
                Route(
                    path=props["Path"],
                    method=props["Method"].upper(),
                    function_logical_id=logical_id,
                    authorizer_logical_id=None if public else "AuthorizerFunction",
                    identity_headers=() if public else AUTHORIZER_HEADERS,
                    api_logical_id="TasksApi",
                    authorizer_cache_seconds=0 if public else 300,
                )
            )
    return routes


def test_every_api_event_is_a_route_with_its_authorizer(local_template: LocalTemplate) -> None:
    routes = set(local_template.routes)
    assert len(routes) == len(local_template.routes) == 29
    assert routes == _api_events(load_yaml(ROOT / "template.yaml"))
    assert local_template.stage == "v1"  # the stage SAM made for TasksApi
    assert set(local_template.gateway_responses) == {
        resource["Properties"]["ResponseType"]
        for resource in load_yaml(ROOT / "template.yaml")["Resources"].values()
        if resource["Type"] == "AWS::ApiGateway::GatewayResponse"
    }


def test_names_stay_the_local_stacks_and_the_roles_share_the_translation(
    local_template: LocalTemplate,
) -> None:
    assert local_template.functions["TasksApiFunction"].name == "imagetasks-local-tasksapifunction"
    assert local_template.tables["TasksTable"].name == "imagetasks-local-taskstable"
    assert local_template.state_machines["TaskWorkflow"].arn == (
        "arn:aws:states:us-east-1:123456789012:stateMachine:imagetasks-local-taskworkflow"
    )
    assert local_template.skipped == {}
    roles = iam.template_roles(local_template)
    # every function, the state machine and (with an image, as locally) the container runner's task
    owners = set(local_template.functions) | set(local_template.state_machines)
    assert set(roles) == owners and not local_template.task_definitions  # the template's defaults
    local = load_template(ROOT / "template.yaml", LOCAL_PARAMETER_OVERRIDES)
    local_roles = iam.template_roles(local)
    assert set(local.task_definitions) == {"WorkerTaskDefinition"}
    assert set(local_roles) == owners | {"WorkerTaskDefinition"}


def test_a_translation_is_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    monkeypatch.setattr(template, "TRANSLATION_CACHE", tmp_path / "cache")
    first = load_template(path)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1

    def refuse(*args: object) -> str:
        raise AssertionError("translated twice")

    monkeypatch.setattr(template, "_run_translator", refuse)
    template._translations.clear()  # from the cache file, then from memory
    assert load_template(path).functions == first.functions
    assert template.translate(path, first.parameters) == first.translated
    path.write_text(MINIMAL.replace("Timeout: 7", "Timeout: 8"), encoding="utf-8")
    with pytest.raises(AssertionError, match="translated twice"):
        load_template(path)


MINIMAL = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.13
    Handler: app.handler
    Timeout: 7
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src
"""


def test_sam_features_the_old_reader_did_not_know(tmp_path: Path) -> None:
    """AutoPublishAlias (events target the alias), a function URL, the implicit API, a schedule and a
    CodeUri in the Globals: read through SAM, each either works locally or is skipped by name."""
    path = tmp_path / "template.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            AWSTemplateFormatVersion: "2010-09-09"
            Transform: AWS::Serverless-2016-10-31
            Globals:
              Function:
                CodeUri: src
                Runtime: python3.13
                Handler: app.handler
                Environment: { Variables: { SHARED: !Ref Uploads } }
            Resources:
              Uploads:
                Type: AWS::S3::Bucket
              Worker:
                Type: AWS::Serverless::Function
                Properties:
                  AutoPublishAlias: live
                  FunctionUrlConfig: { AuthType: AWS_IAM }
                  Events:
                    Hello: { Type: Api, Properties: { Path: /hello, Method: get } }
                    Stored:
                      Type: S3
                      Properties:
                        Bucket: !Ref Uploads
                        Events: [s3:ObjectCreated:*, s3:ObjectRemoved:*]
                        Filter: { S3Key: { Rules: [{ Name: suffix, Value: .qcow2 }] } }
                    Hourly: { Type: Schedule, Properties: { Schedule: rate(1 hour) } }
                    Custom:
                      Type: EventBridgeRule
                      Properties: { Pattern: { source: [my.app] } }
            """
        ),
        encoding="utf-8",
    )
    local = load_template(path)
    worker = local.functions["Worker"]
    assert worker.code_dir == (tmp_path / "src").resolve()
    assert worker.environment == {"SHARED": "imagetasks-local-uploads"}
    # the API integration, the notification and the rule name the alias: still this function
    assert local.routes == [Route("/hello", "GET", "Worker", None, (), "ServerlessRestApi")]
    assert local.stage == "Prod"
    assert local.buckets["Uploads"].notifications == [
        S3Notification("Worker", worker.arn, ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"], None, ".qcow2")
    ]
    assert local.event_rules == [
        EventRule("WorkerCustom", "Worker", {"source": ["my.app"]}),
        EventRule("WorkerHourly", "Worker", None, schedule_seconds=3600),
    ]
    # not emulated, and said so: the function URL (a rate schedule runs locally every rate)
    assert local.skipped == {"WorkerUrl": "AWS::Lambda::Url"}
