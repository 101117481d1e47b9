"""What moto's own CloudFormation (`create_stack`) does with the resources of our translated template.

The local stack does not use it: `local/template.py` resolves the template and creates the resources
itself (docs/local.md, "Why not moto's CloudFormation"; docs/decisions.md). Each test here pins, on
the pinned moto, one thing moto's CloudFormation does (or does not do) that this choice rests on,
on a template of one or two resources shaped as aws-sam-translator writes ours. When one of them
fails after a moto upgrade, moto changed: read that section again, the choice may have changed too.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.template import LocalTemplate

STACK = "imagetasks-local"
ROLE = {"Fn::GetAtt": ["Role", "Arn"]}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
ARTIFACTS = "imagetasks-local-artifacts"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    return buffer.getvalue()


@pytest.fixture
def cloudformation() -> Iterator[Any]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=ARTIFACTS)  # where `sam package` would have put the code
        s3.put_object(Bucket=ARTIFACTS, Key="code.zip", Body=_zip())
        yield boto3.client("cloudformation", region_name="us-east-1")


def _create(cloudformation: Any, resources: dict[str, Any], **template: Any) -> None:
    body = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources, **template}
    cloudformation.create_stack(
        StackName=STACK, TemplateBody=json.dumps(body), Capabilities=["CAPABILITY_IAM"]
    )


def _role() -> dict[str, Any]:
    return {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": TRUST}}


def _function(**properties: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Code": {"S3Bucket": ARTIFACTS, "S3Key": "code.zip"},
            "Handler": "app.lambda_handler",
            "Runtime": "python3.13",
            "Role": ROLE,
            **properties,
        },
    }


# ---------------------------------------------------------------- what it does as CloudFormation would


def test_tables_get_their_indexes_and_rules_their_pattern_schedule_and_target(cloudformation: Any) -> None:
    # Given a table with a global secondary index, and a pattern rule and a schedule on a function
    index = {
        "IndexName": "by_owner",
        "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "ALL"},
    }
    table = {
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "owner", "AttributeType": "S"},
            ],
            "GlobalSecondaryIndexes": [index],
        },
    }
    target = [{"Id": "Target", "Arn": {"Fn::GetAtt": ["Function", "Arn"]}}]
    pattern = {"source": ["aws.states"]}
    rules = {
        "Ended": {"Type": "AWS::Events::Rule", "Properties": {"EventPattern": pattern, "Targets": target}},
        "Sweep": {
            "Type": "AWS::Events::Rule",
            "Properties": {"ScheduleExpression": "rate(1 minute)", "Targets": target},
        },
    }

    # When moto's CloudFormation creates them
    _create(cloudformation, {"Table": table, "Role": _role(), "Function": _function(), **rules})

    # Then the table has its index and the rules are as written, targeting the function
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    (name,) = dynamodb.list_tables()["TableNames"]
    assert [
        i["IndexName"] for i in dynamodb.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"]
    ] == ["by_owner"]
    events = boto3.client("events", region_name="us-east-1")
    listed = {rule["Name"].split("-")[2]: rule for rule in events.list_rules()["Rules"]}
    assert json.loads(listed["Ended"]["EventPattern"]) == pattern
    assert listed["Sweep"]["ScheduleExpression"] == "rate(1 minute)"
    (arn,) = {
        t["Arn"] for r in listed.values() for t in events.list_targets_by_rule(Rule=r["Name"])["Targets"]
    }
    assert ":function:imagetasks-local-Function-" in arn


def test_names_it_makes_end_in_a_random_suffix(cloudformation: Any) -> None:
    # Given a table without a TableName (none of ours has one) and the uploads bucket's name
    bucket_name = {
        "Fn::Sub": [
            "imagetasks-uploads-${Id}",
            {"Id": {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}},
        ]
    }
    table = {
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        },
    }
    uploads = {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": bucket_name}}

    # When moto's CloudFormation creates them
    _create(cloudformation, {"TasksTable": table, "UploadsBucket": uploads})

    # Then both names change with every stack (the local stack's are fixed: imagetasks-local-taskstable,
    # imagetasks-uploads-local, which the event files and the docs name)
    (table_name,) = boto3.client("dynamodb", region_name="us-east-1").list_tables()["TableNames"]
    assert table_name.startswith("imagetasks-local-TasksTable-") and len(table_name) > len(
        "imagetasks-local-TasksTable-"
    )
    buckets = {b["Name"] for b in boto3.client("s3", region_name="us-east-1").list_buckets()["Buckets"]} - {
        ARTIFACTS
    }
    (uploads_name,) = buckets
    assert uploads_name.startswith("imagetasks-uploads-") and uploads_name != "imagetasks-uploads-local"


# ---------------------------------------------------------------- what it does not do


def test_no_value_in_a_list_stays_as_none_and_breaks_the_role(cloudformation: Any) -> None:
    # Given a role whose only policy is there under a condition that is false (AuthorizerFunctionRole)
    role = _role()
    role["Properties"]["Policies"] = [
        {"Fn::If": ["HasSecret", {"PolicyName": "Secret", "PolicyDocument": {}}, {"Ref": "AWS::NoValue"}]}
    ]
    conditions = {"HasSecret": {"Fn::Equals": ["a", "b"]}}

    # When / Then: the list keeps a None (CloudFormation drops the item) and the role cannot be made
    with pytest.raises(TypeError, match="'NoneType' object is not subscriptable"):
        _create(cloudformation, {"Role": role}, Conditions=conditions)


def test_a_tables_time_to_live_is_not_set(cloudformation: Any) -> None:
    table = {
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    }
    _create(cloudformation, {"Table": table})

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    (name,) = dynamodb.list_tables()["TableNames"]
    assert dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "DISABLED"
    }


def test_a_buckets_lambda_notification_is_not_set(cloudformation: Any) -> None:
    notification = {
        "LambdaConfigurations": [
            {
                "Event": "s3:ObjectCreated:*",
                "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": "uploads/"}]}},
                "Function": {"Fn::GetAtt": ["Function", "Arn"]},
            }
        ]
    }
    bucket = {"Type": "AWS::S3::Bucket", "Properties": {"NotificationConfiguration": notification}}
    _create(cloudformation, {"Role": _role(), "Function": _function(), "Uploads": bucket})

    s3 = boto3.client("s3", region_name="us-east-1")
    (name,) = {b["Name"] for b in s3.list_buckets()["Buckets"]} - {ARTIFACTS}
    configuration = s3.get_bucket_notification_configuration(Bucket=name)
    assert "LambdaFunctionConfigurations" not in configuration


def test_a_functions_layers_are_dropped_and_a_layers_ref_is_not_its_arn(cloudformation: Any) -> None:
    layer = {
        "Type": "AWS::Lambda::LayerVersion",
        "Properties": {"LayerName": "CommonLayer", "Content": {"S3Bucket": ARTIFACTS, "S3Key": "code.zip"}},
    }
    environment = {"Variables": {"LAYER": {"Ref": "CommonLayer"}}}
    resources = {
        "CommonLayer": layer,
        "Role": _role(),
        "Function": _function(Layers=[{"Ref": "CommonLayer"}]),
    }
    resources["Named"] = _function(Environment=environment)
    _create(cloudformation, resources)

    from moto.awslambda.models import lambda_backends

    functions = {
        f.function_name.split("-")[2]: f
        for f in lambda_backends["123456789012"]["us-east-1"].list_functions()
    }
    assert functions["Function"].layers == []
    # the layer version object itself, not its ARN (ListFunctions then fails to serialise it)
    assert not isinstance(functions["Named"].environment_vars["LAYER"], str)


def test_a_number_parameter_reaches_a_functions_environment_as_a_number(cloudformation: Any) -> None:
    environment = {"Variables": {"MAX_CONCURRENT_TASKS": {"Ref": "MaxConcurrentTasks"}}}
    _create(
        cloudformation,
        {"Role": _role(), "Function": _function(Environment=environment)},
        Parameters={"MaxConcurrentTasks": {"Type": "Number", "Default": 4}},
    )

    from moto.awslambda.models import lambda_backends

    (function,) = lambda_backends["123456789012"]["us-east-1"].list_functions()
    assert function.environment_vars["MAX_CONCURRENT_TASKS"] == 4  # CloudFormation gives Lambda "4"


def test_a_roles_inline_policy_is_read_back_as_python_not_json(cloudformation: Any) -> None:
    role = _role()
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
    }
    role["Properties"]["Policies"] = [{"PolicyName": "Read", "PolicyDocument": document}]
    _create(cloudformation, {"Role": role})

    iam = boto3.client("iam", region_name="us-east-1")
    (name,) = [r["RoleName"] for r in iam.list_roles()["Roles"]]
    from moto.iam.models import iam_backends

    stored = iam_backends["123456789012"]["aws"].get_role(name).policies["Read"]
    assert stored == document and not isinstance(stored, str)  # the API stores the JSON text
    assert str(stored).startswith("{'Version'")  # what GetRolePolicy answers: not JSON


def test_a_state_machines_definition_uri_and_substitutions_are_ignored(cloudformation: Any) -> None:
    definition = (
        '{"StartAt": "Done", "States": {"Done": {"Type": "Pass", "Result": "${Value}", "End": true}}}'
    )
    boto3.client("s3", region_name="us-east-1").put_object(
        Bucket=ARTIFACTS, Key="workflow.json", Body=definition
    )
    machines = {
        "FromUri": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "DefinitionS3Location": {"Bucket": ARTIFACTS, "Key": "workflow.json"},
                "DefinitionSubstitutions": {"Value": "substituted"},
                "RoleArn": ROLE,
            },
        },
        "Inline": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "DefinitionString": definition,
                "DefinitionSubstitutions": {"Value": "substituted"},
                "RoleArn": ROLE,
            },
        },
    }
    _create(cloudformation, {"Role": _role(), **machines})

    stepfunctions = boto3.client("stepfunctions", region_name="us-east-1")
    by_name = {
        m["name"].split("-")[2]: m["stateMachineArn"]
        for m in stepfunctions.list_state_machines()["stateMachines"]
    }
    assert stepfunctions.describe_state_machine(stateMachineArn=by_name["FromUri"])["definition"] == ""
    assert "${Value}" in stepfunctions.describe_state_machine(stateMachineArn=by_name["Inline"])["definition"]


def test_a_state_machine_it_makes_is_not_one_the_asl_interpreter_runs() -> None:
    definition = '{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}'
    machine = {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {"DefinitionString": definition, "RoleArn": ROLE},
    }
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        _create(
            boto3.client("cloudformation", region_name="us-east-1"), {"Role": _role(), "Machine": machine}
        )

        # It went to the store of the plain backend; the API answers from the interpreter's.
        assert (
            boto3.client("stepfunctions", region_name="us-east-1").list_state_machines()["stateMachines"]
            == []
        )


def test_a_fargate_task_definition_loses_its_task_level_settings(cloudformation: Any) -> None:
    definition = {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            "Family": "imagetasks-local-worker",
            "Cpu": "4096",
            "Memory": "16384",
            "NetworkMode": "awsvpc",
            "RequiresCompatibilities": ["FARGATE"],
            "EphemeralStorage": {"SizeInGiB": 200},
            "TaskRoleArn": ROLE,
            "ExecutionRoleArn": ROLE,
            "ContainerDefinitions": [{"Name": "worker", "Image": "localhost/imagetasks-worker:latest"}],
        },
    }
    _create(cloudformation, {"Role": _role(), "Worker": definition})

    ecs = boto3.client("ecs", region_name="us-east-1")
    registered = ecs.describe_task_definition(taskDefinition="imagetasks-local-worker")["taskDefinition"]
    assert registered["memory"] == "16384"
    lost = ("cpu", "ephemeralStorage", "taskRoleArn", "executionRoleArn", "requiresCompatibilities")
    assert [key for key in lost if registered.get(key)] == []
    assert registered["networkMode"] == "bridge"


def test_an_alias_is_not_made_so_what_names_it_is_left_unresolved(cloudformation: Any) -> None:
    # Given what SAM makes of AutoPublishAlias, and a function whose environment names the alias
    # (as the API's integration URIs and permissions do)
    version = {"Type": "AWS::Lambda::Version", "Properties": {"FunctionName": {"Ref": "Function"}}}
    alias = {
        "Type": "AWS::Lambda::Alias",
        "Properties": {
            "FunctionName": {"Ref": "Function"},
            "FunctionVersion": {"Fn::GetAtt": ["Version", "Version"]},
            "Name": "live",
        },
    }
    environment = {"Variables": {"TARGET": {"Fn::Sub": "${Alias}/invocations"}}}
    resources = {"Role": _role(), "Function": _function(), "Version": version, "Alias": alias}
    resources["Other"] = _function(Environment=environment)

    with pytest.warns(UserWarning, match="AWS::Lambda::Alias but it's not supported"):
        _create(cloudformation, resources)

    lambda_client = boto3.client("lambda", region_name="us-east-1")
    (other,) = [f for f in lambda_client.list_functions()["Functions"] if "-Other-" in f["FunctionName"]]
    assert other["Environment"]["Variables"]["TARGET"] == "${Alias}/invocations"


def test_the_rest_api_sam_makes_has_no_name_and_is_refused(cloudformation: Any) -> None:
    api = {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Body": {"swagger": "2.0", "paths": {}}}}
    with pytest.raises(KeyError, match="Name"):
        _create(cloudformation, {"TasksApi": api})


def test_an_alarm_is_not_made_so_the_dashboard_naming_it_is_refused(cloudformation: Any) -> None:
    alarm = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "MetricName": "Errors",
            "Namespace": "AWS/Lambda",
            "Statistic": "Sum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        },
    }
    dashboard = {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {"DashboardBody": {"Fn::Sub": '{"widgets": [{"alarms": ["${Alarm.Arn}"]}]}'}},
    }
    with pytest.warns(UserWarning), pytest.raises(Exception, match="references undefined resource Alarm"):
        _create(cloudformation, {"Alarm": alarm, "Dashboard": dashboard})


# ---------------------------------------------------------------- our template


def test_our_translated_template_is_refused(cloudformation: Any, local_template: LocalTemplate) -> None:
    # Given the template as `sam deploy` sends it, its code where `sam package` would put it
    translated = local_template.translated
    s3 = boto3.client("s3", region_name="us-east-1")
    for resource in translated["Resources"].values():
        properties = resource.get("Properties") or {}
        for key in ("Code", "Content"):
            if isinstance(properties.get(key), dict) and properties[key].get("S3Bucket") == ARTIFACTS:
                s3.put_object(Bucket=ARTIFACTS, Key=properties[key]["S3Key"], Body=_zip())
    parameters = [
        {"ParameterKey": name, "ParameterValue": ",".join(value) if isinstance(value, list) else str(value)}
        for name, value in local_template.parameters.items()
    ]

    # When / Then: the first role with a conditional policy ends it (the tests above say what follows)
    with pytest.warns(UserWarning), pytest.raises(TypeError, match="'NoneType' object is not subscriptable"):
        cloudformation.create_stack(
            StackName=STACK,
            TemplateBody=json.dumps(translated),
            Parameters=parameters,
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
