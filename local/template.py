"""template.yaml → a plain description of the local stack, read the way AWS reads it.

The template goes through aws-sam-translator first (`local/sam_translate.py`, the code `sam deploy`
uses): Globals merged, event sources turned into S3 notifications, EventBridge rules and the REST API's
OpenAPI body, policy templates expanded. This module resolves the intrinsic functions of that plain
CloudFormation to deterministic local values (moto's account and region) and sorts each resource by its
Type into the specs the local stack creates. A type it does not know is skipped with a debug log: a
function, a table or a bucket added to the template appears locally without touching this file.

moto's own CloudFormation (`create_stack`) cannot do this work for the local stack (moto 5.2.5 refuses
the translated template; docs/local.md, "Why not moto's CloudFormation", and
tests/local/test_moto_cloudformation.py): each piece kept below for that reason says so in one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from local.sam_translate import ARTIFACT_BUCKET

log = logging.getLogger("local.template")

ACCOUNT_ID = "123456789012"  # moto's default account: ARNs must name it for moto to find the resources
REGION = "us-east-1"
STACK_NAME = "imagetasks-local"

#: Parameter values for the local stack, applied over the template's defaults (then over --param).
LOCAL_PARAMETER_OVERRIDES: dict[str, str] = {
    "ImportAllowLoopback": "true",
    # The README's and the banner's example serves an image with `python3 -m http.server 8000`.
    "ImportAllowedPorts": "80,443,8000",
    "RetryIntervalSeconds": "1",
    # The container runner is on: its tasks run the worker from this repository (local/ecs.py).
    "WorkerImageUri": "localhost/imagetasks-worker:latest",
}

# The SAM types of the source template (what tools reading template.yaml itself look for).
FUNCTION_TYPE = "AWS::Serverless::Function"
LAYER_TYPE = "AWS::Serverless::LayerVersion"
# The CloudFormation types of the translated template, which this module reads.
LAMBDA_FUNCTION_TYPE = "AWS::Lambda::Function"
LAMBDA_LAYER_TYPE = "AWS::Lambda::LayerVersion"
TABLE_TYPE = "AWS::DynamoDB::Table"
BUCKET_TYPE = "AWS::S3::Bucket"
STATE_MACHINE_TYPE = "AWS::StepFunctions::StateMachine"
REST_API_TYPE = "AWS::ApiGateway::RestApi"
ECS_CLUSTER_TYPE = "AWS::ECS::Cluster"
TASK_DEFINITION_TYPE = "AWS::ECS::TaskDefinition"
STAGE_TYPE = "AWS::ApiGateway::Stage"

# Types that exist only for permissions or deployment: nothing to emulate locally, no debug noise.
_IGNORED_TYPES = frozenset(
    {"AWS::S3::BucketPolicy", "AWS::IAM::Role", "AWS::IAM::Policy", "AWS::Lambda::Permission"}
    | {"AWS::Logs::LogGroup", "AWS::CloudWatch::Alarm"}
    | {"AWS::ApiGateway::Account", "AWS::ApiGateway::Deployment"}
    # AutoPublishAlias: the alias and its version lead to the function itself (see find_function).
    | {"AWS::Lambda::Version", "AWS::Lambda::Alias"}
    # Retries and destinations of asynchronous invocations, the failed-invocations queue and the
    # alarm topic: locally, a handler error is just logged.
    | {"AWS::Lambda::EventInvokeConfig", "AWS::SQS::Queue"}
    | {"AWS::SNS::Topic", "AWS::SNS::Subscription", "AWS::SNS::TopicPolicy"}
    # What operators look at and what guards the stage: nothing to emulate (see docs/local.md).
    | {"AWS::CloudWatch::Dashboard", "AWS::WAFv2::WebACLAssociation"}
)

REPOSITORY = Path(__file__).resolve().parent.parent
SAM_PYTHON = REPOSITORY / ".venv-sam" / "bin" / "python"
TRANSLATE_SCRIPT = Path(__file__).resolve().parent / "sam_translate.py"
#: Translations already made, by template, parameters and translator (one is ~2 s of subprocess).
TRANSLATION_CACHE = REPOSITORY / "local" / ".state" / "sam-translations"


class TemplateError(ValueError):
    """The template uses something the local stack cannot resolve."""


# ------------------------------------------------------------------ YAML with CloudFormation tags


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader plus the short intrinsic-function tags (`!Ref`, `!GetAtt`, `!Sub`, ...)."""


def _construct_intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise TemplateError(f"unexpected YAML node for !{tag_suffix}")
    if tag_suffix in ("Ref", "Condition"):
        return {tag_suffix: value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # `!GetAtt A.B.C` means resource A, attribute "B.C"
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as stream:
        data = yaml.load(stream, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, dict):
        raise TemplateError(f"{path} is not a CloudFormation template")
    return data


# ------------------------------------------------------------------ specs


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    create_kwargs: dict[str, Any]  # ready for dynamodb.create_table(**kwargs)
    ttl_attribute: str | None


@dataclass(frozen=True)
class S3Notification:
    function_logical_id: str
    function_arn: str
    events: list[str]
    prefix: str | None
    suffix: str | None


@dataclass
class BucketSpec:
    logical_id: str
    name: str
    notifications: list[S3Notification] = field(default_factory=list)


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    runtime: str
    timeout_seconds: int
    memory_mb: int
    environment: dict[str, str]
    layer_paths: list[Path]


@dataclass(frozen=True)
class StateMachineSpec:
    logical_id: str
    name: str
    arn: str
    definition: str
    type: str


@dataclass(frozen=True)
class TaskDefinitionSpec:
    """An ECS task definition (the container runner): what the local run hook starts."""

    logical_id: str
    family: str
    arn: str
    image: str
    container_name: str
    environment: dict[str, str]
    #: What moto's RegisterTaskDefinition takes (resolved, camelCase).
    registration: dict[str, Any]


@dataclass(frozen=True)
class Route:
    """One API event: a path template and method, the function behind it, and its authorizer."""

    path: str
    method: str  # upper case; ANY matches every method
    function_logical_id: str
    authorizer_logical_id: str | None  # None: the route is public (Auth: {Authorizer: NONE})
    identity_headers: tuple[str, ...]
    api_logical_id: str
    authorizer_cache_seconds: int = 0  # how long API Gateway reuses the authorizer's answer per identity


@dataclass(frozen=True)
class GatewayResponse:
    status: int | None  # None: API Gateway's own status for the error stays
    template: str | None
    headers: dict[str, str]  # header → "context.requestId" or "'literal'", as API Gateway writes them


@dataclass(frozen=True)
class EventRule:
    """An EventBridge rule whose target is one of our functions: an event pattern, or a schedule
    (`rate(...)` only; the local stack runs it every `schedule_seconds`)."""

    name: str
    function_logical_id: str
    pattern: dict[str, Any] | None
    schedule_seconds: float | None = None
    bus: str = "default"  # the bus a pattern rule listens on (by name)


_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of an EventBridge `rate(N unit)` expression; None for anything else."""
    match = re.fullmatch(r"\s*rate\(\s*(\d+) +(minute|hour|day)s?\s*\)\s*", expression)
    return int(match[1]) * _RATE_UNITS[match[2]] if match else None


@dataclass
class LocalTemplate:
    path: Path
    parameters: dict[str, Any]
    tables: dict[str, TableSpec] = field(default_factory=dict)
    buckets: dict[str, BucketSpec] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    state_machines: dict[str, StateMachineSpec] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    #: by ResponseType (UNAUTHORIZED, DEFAULT_4XX, ...)
    gateway_responses: dict[str, GatewayResponse] = field(default_factory=dict)
    stage: str = "local"
    event_rules: list[EventRule] = field(default_factory=list)
    #: logical id → type the local stack does not emulate
    skipped: dict[str, str] = field(default_factory=dict)
    ecs_clusters: dict[str, str] = field(default_factory=dict)  # logical id → cluster name
    #: path template → the headers of its CORS preflight (the mock OPTIONS SAM adds for `Cors`)
    preflights: dict[str, dict[str, str]] = field(default_factory=dict)
    task_definitions: dict[str, TaskDefinitionSpec] = field(default_factory=dict)
    # The CloudFormation template aws-sam-translator made of the source (intrinsics unresolved).
    translated: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


# ------------------------------------------------------------------ intrinsic functions


_NO_VALUE = object()  # AWS::NoValue: the enclosing property disappears
_SUB_PATTERN = re.compile(r"\$\{([^}]+)\}")


def rest_api_id(logical_id: str) -> str:
    """The local REST API id: what `!Ref` of an API gives, and what appears in method ARNs."""
    return logical_id.lower()


def local_name(logical_id: str) -> str:
    """Deterministic local physical name; lower case because bucket names must be."""
    # moto's CloudFormation names resources <stack>-<LogicalId>-<random> (moto 5.2.5): not fixed names.
    return f"{STACK_NAME}-{logical_id.lower()}"


_PSEUDO_PARAMETERS = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT_ID,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": STACK_NAME,
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK_NAME}/local",
    "AWS::NotificationARNs": [],
    "AWS::NoValue": _NO_VALUE,
}
#: The property that names a resource of each type (without it, the name is local_name(logical id)).
_NAME_PROPERTIES = {
    TABLE_TYPE: "TableName",
    BUCKET_TYPE: "BucketName",
    LAMBDA_FUNCTION_TYPE: "FunctionName",
    LAMBDA_LAYER_TYPE: "LayerName",
    STATE_MACHINE_TYPE: "StateMachineName",
    ECS_CLUSTER_TYPE: "ClusterName",
    TASK_DEFINITION_TYPE: "Family",
}
#: The ARN of a resource by its type, from its physical name: what `!GetAtt X.Arn` gives (and `!Ref`
#: of a state machine, a layer or a task definition, whose first version is the one the stack makes).
_ARNS = {
    LAMBDA_FUNCTION_TYPE: "arn:aws:lambda:{region}:{account}:function:{name}",
    LAMBDA_LAYER_TYPE: "arn:aws:lambda:{region}:{account}:layer:{name}:1",
    TABLE_TYPE: "arn:aws:dynamodb:{region}:{account}:table/{name}",
    BUCKET_TYPE: "arn:aws:s3:::{name}",
    STATE_MACHINE_TYPE: "arn:aws:states:{region}:{account}:stateMachine:{name}",
    ECS_CLUSTER_TYPE: "arn:aws:ecs:{region}:{account}:cluster/{name}",
    TASK_DEFINITION_TYPE: "arn:aws:ecs:{region}:{account}:task-definition/{name}:1",
    "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{name}",
    "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}:*",
}


# Intrinsics are resolved here: moto's CloudFormation keeps AWS::NoValue as None in lists, gives a
# layer's Ref as an object and leaves what names an alias (it makes none) unresolved (moto 5.2.5).
class _Resolver:
    def __init__(self, template: dict[str, Any], parameters: dict[str, Any]) -> None:
        self._resources: dict[str, dict[str, Any]] = template.get("Resources") or {}
        self._conditions: dict[str, Any] = template.get("Conditions") or {}
        self._parameters = parameters
        self._condition_cache: dict[str, bool] = {}

    def physical_name(self, logical_id: str) -> str:
        resource = self._resources[logical_id]
        name_property = _NAME_PROPERTIES.get(resource.get("Type", ""))
        name = (resource.get("Properties") or {}).get(name_property) if name_property else None
        return local_name(logical_id) if name is None else str(self.resolve(name))

    def ref(self, name: str) -> Any:
        if name in _PSEUDO_PARAMETERS:
            return _PSEUDO_PARAMETERS[name]
        if name in self._parameters:
            return self._parameters[name]
        if name not in self._resources:
            raise TemplateError(f"!Ref to unknown name {name}")
        resource = self._resources[name]
        kind = resource.get("Type", "")
        if kind in (STATE_MACHINE_TYPE, LAMBDA_LAYER_TYPE, TASK_DEFINITION_TYPE):
            return self.get_att(name, "Arn")
        if kind == REST_API_TYPE:
            return rest_api_id(name)
        if kind in (TABLE_TYPE, BUCKET_TYPE, LAMBDA_FUNCTION_TYPE, ECS_CLUSTER_TYPE):
            return self.physical_name(name)
        if kind in ("AWS::Lambda::Version", "AWS::Lambda::Alias"):  # AutoPublishAlias: qualified ARNs
            props = resource.get("Properties") or {}
            function = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.resolve(props['FunctionName'])}"
            return f"{function}:{self.resolve(props['Name']) if 'Name' in props else 1}"
        return name

    def get_att(self, logical_id: str, attribute: str) -> Any:
        if logical_id not in self._resources:
            raise TemplateError(f"!GetAtt of unknown resource {logical_id}")
        kind = self._resources[logical_id].get("Type", "")
        name = self.physical_name(logical_id)
        if attribute == "Arn" and kind in _ARNS:
            return _ARNS[kind].format(region=REGION, account=ACCOUNT_ID, name=name)
        if attribute == "Name" and kind == STATE_MACHINE_TYPE:
            return name
        log.debug("no local value for !GetAtt %s.%s; using a placeholder", logical_id, attribute)
        return f"{logical_id}.{attribute}"

    def condition(self, name: str) -> bool:
        if name not in self._condition_cache:
            if name not in self._conditions:
                raise TemplateError(f"unknown condition {name}")
            self._condition_cache[name] = bool(self.resolve(self._conditions[name]))
        return self._condition_cache[name]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(arg))
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def _function(self, name: str, arg: Any) -> Any:
        if name == "GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self.get_att(str(self.resolve(logical_id)), str(self.resolve(attribute)))
        if name == "Sub":
            return self._sub(arg)
        if name == "Join":
            separator, items = arg
            return str(separator).join(_as_str(item) for item in self.resolve(items))
        if name == "Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if name == "Split":
            separator, text = self.resolve(arg)
            return str(text).split(str(separator))
        if name == "If":
            condition, when_true, when_false = arg
            return self.resolve(when_true if self.condition(condition) else when_false)
        if name == "Equals":
            left, right = self.resolve(arg)
            return _as_str(left) == _as_str(right)
        if name == "Not":
            return not self.resolve(arg[0])
        if name == "And":
            return all(self.resolve(item) for item in arg)
        if name == "Or":
            return any(self.resolve(item) for item in arg)
        # Fn::FindInMap, Fn::Base64, Fn::GetAZs...: the template uses none.
        raise TemplateError(f"intrinsic function Fn::{name} is not supported locally")

    def _sub(self, arg: Any) -> str:
        text, variables = (arg[0], self.resolve(arg[1])) if isinstance(arg, list) else (arg, {})

        def substitute(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
                return "${" + expression[1:] + "}"
            if expression in variables:
                return _as_str(variables[expression])
            if "." in expression and not expression.startswith("AWS::"):
                logical_id, attribute = expression.split(".", 1)
                return _as_str(self.get_att(logical_id, attribute))
            return _as_str(self.ref(expression))

        return _SUB_PATTERN.sub(substitute, str(text))


def _as_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_as_str(item) for item in value)
    return str(value)


# ------------------------------------------------------------------ parameters


def resolve_parameters(template: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Template defaults, then `overrides`; CommaDelimitedList becomes a list, everything else a string."""
    declared: dict[str, dict[str, Any]] = template.get("Parameters") or {}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"unknown parameters: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, declaration in declared.items():
        raw = overrides.get(name, declaration.get("Default"))
        if raw is None:
            raise TemplateError(f"parameter {name} has no default; pass --param {name}=...")
        allowed = declaration.get("AllowedValues")
        if allowed is not None and _as_str(raw) not in [_as_str(item) for item in allowed]:
            raise TemplateError(f"parameter {name}={raw!r} is not one of {allowed}")
        if declaration.get("Type") == "CommaDelimitedList":
            values[name] = raw if isinstance(raw, list) else [item.strip() for item in str(raw).split(",")]
        else:
            values[name] = _as_str(raw)
    return values


# ------------------------------------------------------------------ aws-sam-translator

_translations: dict[str, str] = {}  # cache key → translated template (JSON), for this process


def translate(template_path: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The CloudFormation template `sam deploy` would send (aws-sam-translator, in the SAM venv).

    Cached in this process and under local/.state, by template text, parameters and translator: the
    local stack and its IAM roles read one translation, and a restart with nothing changed needs none.
    """
    digest = hashlib.sha256(template_path.read_bytes())
    digest.update(json.dumps(dict(parameters), sort_keys=True).encode())
    digest.update(TRANSLATE_SCRIPT.read_bytes())
    # the translator's version: its dist-info folder in the SAM venv
    versions = sorted(
        p.name for p in SAM_PYTHON.parent.parent.glob("lib/*/site-packages/aws_sam_translator-*")
    )
    digest.update(" ".join(versions).encode())
    key = digest.hexdigest()[:32]
    text = _translations.get(key)
    if text is None:
        cached = TRANSLATION_CACHE / f"{key}.json"
        try:
            text = cached.read_text(encoding="utf-8")
        except OSError:
            text = _run_translator(template_path, parameters)
            try:  # atomically: another process may read the same entry meanwhile
                cached.parent.mkdir(parents=True, exist_ok=True)
                partial = cached.with_suffix(f".{os.getpid()}.tmp")
                partial.write_text(text, encoding="utf-8")
                partial.replace(cached)
            except OSError as error:  # a read-only checkout still works, translating each time
                log.debug("could not cache the translation in %s: %s", cached, error)
        _translations[key] = text
    result: dict[str, Any] = json.loads(text)
    return result


def _run_translator(template_path: Path, parameters: Mapping[str, Any]) -> str:
    python = SAM_PYTHON if SAM_PYTHON.exists() else Path(sys.executable)
    try:
        command = [str(python), str(TRANSLATE_SCRIPT), str(template_path), json.dumps(dict(parameters))]
        completed = subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    except subprocess.CalledProcessError as error:
        raise TemplateError(
            f"aws-sam-translator could not translate {template_path} (run `make install`):\n{error.stderr}"
        ) from None
    return completed.stdout


# ------------------------------------------------------------------ the specs


def load_template(path: Path, overrides: Mapping[str, str] | None = None) -> LocalTemplate:
    """Translate the template as `sam deploy` does, then resolve what CloudFormation would create;
    `overrides` are parameter values (applied over LOCAL_PARAMETER_OVERRIDES by the caller's choice)."""
    source = load_yaml(path)
    parameters = resolve_parameters(source, overrides or {})
    return _Reader(path, source, translate(path, parameters), parameters).read()


def recase_keys(value: Any, first: Callable[[str], str]) -> Any:
    """`value` with every key's first letter passed through `first`, at every depth: PascalCase
    (CloudFormation, Step Functions) to an API's camelCase with `str.lower`, back with `str.upper`."""
    if isinstance(value, dict):
        return {first(key[:1]) + key[1:]: recase_keys(item, first) for key, item in value.items()}
    if isinstance(value, list):
        return [recase_keys(item, first) for item in value]
    return value


def find_function(functions: Mapping[str, FunctionSpec], reference: Any) -> FunctionSpec | None:
    """A function by logical id, name or ARN (perhaps qualified by an alias or version)."""
    text = str(reference)
    name = text.split(":function:", 1)[1].split(":", 1)[0] if ":function:" in text else text
    return functions.get(text) or next((spec for spec in functions.values() if spec.name == name), None)


def _headers(parameters: Mapping[str, Any] | None, source: str) -> dict[str, str]:
    """The headers among API Gateway's parameters: `<source>.header.<name>` → value, by name."""
    prefix = f"{source}.header."
    return {
        key.removeprefix(prefix): str(value)
        for key, value in (parameters or {}).items()
        if key.startswith(prefix)
    }


_ANY_METHOD = "x-amazon-apigateway-any-method"
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", _ANY_METHOD})
_INTEGRATION_FUNCTION = re.compile(r":lambda:path/[^/]+/functions/(.+)/invocations$")


class _Reader:
    """One read of a translated template: each resource it keeps, as a spec in `result`."""

    def __init__(
        self, path: Path, source: dict[str, Any], translated: dict[str, Any], parameters: dict[str, Any]
    ) -> None:
        self.resolver = _Resolver(translated, parameters)
        self.base_dir = path.parent
        self.source_resources: dict[str, dict[str, Any]] = source.get("Resources") or {}
        self.result = LocalTemplate(path=path, parameters=parameters, translated=translated)
        self.layer_dirs: dict[str, Path] = {}  # each layer's ARN (as the functions name it) → its folder

    def read(self) -> LocalTemplate:
        resolver, result = self.resolver, self.result
        # In the source's order (the translator's JSON is sorted), the resources SAM generated last.
        order = {logical_id: index for index, logical_id in enumerate(self.source_resources)}
        resources = {
            logical_id: resource
            for logical_id, resource in sorted(
                (result.translated.get("Resources") or {}).items(),
                key=lambda item: order.get(item[0], len(order)),
            )
            if "Condition" not in resource or resolver.condition(resource["Condition"])
        }

        def of_type(kind: str) -> dict[str, dict[str, Any]]:
            return {
                lid: res.get("Properties") or {} for lid, res in resources.items() if res.get("Type") == kind
            }

        for logical_id, props in of_type(LAMBDA_LAYER_TYPE).items():
            content = self._local_artifact(props.get("Content"), "S3Bucket", "S3Key")
            if content is not None:
                self.layer_dirs[resolver.ref(logical_id)] = self._layer_python_dir(content, logical_id)
        for logical_id, props in of_type(LAMBDA_FUNCTION_TYPE).items():
            result.functions[logical_id] = self._function(logical_id, resolver.resolve(props))
        for logical_id, resource in resources.items():
            self._add(logical_id, resource.get("Type"), resource.get("Properties") or {})
        # The stage of the one API the local front serves (the last the template gives it), if any.
        apis = {route.api_logical_id for route in result.routes}
        if len(apis) > 1:
            raise TemplateError("several APIs in the template; the local front serves only one")
        for props in of_type(STAGE_TYPE).values():
            if apis and resolver.resolve(props.get("RestApiId")) == rest_api_id(next(iter(apis))):
                result.stage = str(resolver.resolve(props["StageName"]))
        return result

    def _add(self, logical_id: str, kind: str | None, props: dict[str, Any]) -> None:
        """Any resource but a layer, a function or a stage (those are read first, or last)."""
        result, resolve = self.result, self.resolver.resolve
        if kind == TABLE_TYPE:
            result.tables[logical_id] = self._table(logical_id, resolve(props))
        elif kind == BUCKET_TYPE:
            result.buckets[logical_id] = self._bucket(logical_id, props)
        elif kind == STATE_MACHINE_TYPE:
            result.state_machines[logical_id] = self._state_machine(logical_id, resolve(props))
        elif kind == REST_API_TYPE:
            self._api(logical_id, props)
        elif kind == "AWS::ApiGateway::GatewayResponse":
            response = resolve(props)
            result.gateway_responses[str(response["ResponseType"])] = GatewayResponse(
                status=int(response["StatusCode"]) if response.get("StatusCode") else None,
                template=(response.get("ResponseTemplates") or {}).get("application/json"),
                headers=_headers(response.get("ResponseParameters"), "gatewayresponse"),
            )
        elif kind == "AWS::Events::Rule":
            result.event_rules.extend(self._event_rules(logical_id, resolve(props)))
        elif kind == ECS_CLUSTER_TYPE:
            result.ecs_clusters[logical_id] = self.resolver.physical_name(logical_id)
        elif kind == TASK_DEFINITION_TYPE:
            result.task_definitions[logical_id] = self._task_definition(logical_id, resolve(props))
        elif kind not in _IGNORED_TYPES and kind not in (LAMBDA_LAYER_TYPE, LAMBDA_FUNCTION_TYPE, STAGE_TYPE):
            log.debug("resource %s of type %s is not emulated locally", logical_id, kind)
            result.skipped[logical_id] = str(kind)

    def _function_id(self, reference: Any) -> str | None:
        spec = find_function(self.result.functions, reference)
        return spec.logical_id if spec else None

    def _local_artifact(self, location: Any, bucket_key: str, key_key: str) -> Path | None:
        """The local path behind an S3 location local/sam_translate.py made of a CodeUri, ContentUri or
        DefinitionUri; None for a location that really is in S3."""
        if isinstance(location, dict) and location.get(bucket_key) == ARTIFACT_BUCKET:
            return self.base_dir / str(location[key_key])
        return None

    def _layer_python_dir(self, content_dir: Path, logical_id: str) -> Path:
        """The local folder that becomes the layer's `python/` (on Lambda, `/opt/python`).

        SAM appends a hash to a layer's logical id and drops the Metadata, whose BuildMethod says where
        `python/` is: `sam build` with `BuildMethod: python3.x` copies the ContentUri folder itself into
        `python/`; a layer uploaded as it is (no BuildMethod) must carry `python/` in its ContentUri.
        """
        source = self.source_resources.get(logical_id) or {}
        for source_id, resource in self.source_resources.items():
            hashed = re.fullmatch(re.escape(source_id) + "[0-9a-f]{10}", logical_id)
            if hashed and resource.get("Type") == LAYER_TYPE and not source:
                source = resource
        build_method = str((source.get("Metadata") or {}).get("BuildMethod", ""))
        return content_dir if build_method.startswith("python") else content_dir / "python"

    def _function(self, logical_id: str, props: dict[str, Any]) -> FunctionSpec:
        code_dir = self._local_artifact(props.get("Code"), "S3Bucket", "S3Key")
        if code_dir is None:
            raise TemplateError(f"{logical_id}: only a local CodeUri folder can run locally")
        # moto's CloudFormation drops a function's Layers (moto 5.2.5); the runner needs their folders.
        layer_paths: list[Path] = []
        for layer in props.get("Layers") or []:
            if str(layer) not in self.layer_dirs:
                log.debug(
                    "%s: layer %s is not in the template; its code must already be importable",
                    logical_id,
                    layer,
                )
            # A layer built from requirements.txt alone has no code locally (its folder holds just that
            # file): its packages come from the virtual environment.
            elif self.layer_dirs[str(layer)].is_dir():
                layer_paths.append(self.layer_dirs[str(layer)].resolve())
        return FunctionSpec(
            logical_id=logical_id,
            name=self.resolver.physical_name(logical_id),
            arn=self.resolver.get_att(logical_id, "Arn"),
            code_dir=code_dir.resolve(),
            handler=str(props.get("Handler", "app.lambda_handler")),
            runtime=str(props.get("Runtime", "python3.13")),
            timeout_seconds=int(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
            environment={
                str(key): _as_str(value)
                for key, value in ((props.get("Environment") or {}).get("Variables") or {}).items()
            },
            layer_paths=layer_paths,
        )

    def _table(self, logical_id: str, props: dict[str, Any]) -> TableSpec:
        name = self.resolver.physical_name(logical_id)
        kwargs: dict[str, Any] = {"TableName": name, "BillingMode": props.get("BillingMode", "PROVISIONED")}
        keys = ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "LocalSecondaryIndexes")
        kwargs |= {key: props[key] for key in keys if props.get(key)}
        if kwargs["BillingMode"] == "PROVISIONED":
            default = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
            kwargs["ProvisionedThroughput"] = props.get("ProvisionedThroughput") or default
        if props.get("StreamSpecification"):
            # CloudFormation names only the view type; the API also wants StreamEnabled.
            view = props["StreamSpecification"]["StreamViewType"]
            kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
        # moto's CloudFormation does not set a table's TimeToLiveSpecification (moto 5.2.5).
        ttl = props.get("TimeToLiveSpecification") or {}
        ttl_attribute = ttl.get("AttributeName") if str(ttl.get("Enabled")).lower() == "true" else None
        return TableSpec(logical_id=logical_id, name=name, create_kwargs=kwargs, ttl_attribute=ttl_attribute)

    def _bucket(self, logical_id: str, props: dict[str, Any]) -> BucketSpec:
        """The bucket and the Lambda notifications SAM added to it for the functions' S3 events."""
        bucket = BucketSpec(logical_id, self.resolver.physical_name(logical_id))
        # moto's CloudFormation does not set a bucket's NotificationConfiguration (moto 5.2.5).
        configuration = self.resolver.resolve(props.get("NotificationConfiguration") or {})
        for other in set(configuration) - {"LambdaConfigurations"}:
            log.debug("bucket %s: %s are not emulated locally", logical_id, other)
        grouped: dict[tuple[str, str | None, str | None], list[str]] = {}
        for entry in configuration.get("LambdaConfigurations") or []:
            target = self._function_id(entry.get("Function"))
            if target is None:
                log.debug("bucket %s notifies %s, not a function here", logical_id, entry.get("Function"))
                continue
            filters = {
                str(rule.get("Name")).lower(): str(rule.get("Value"))
                for rule in ((entry.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
            }
            key = (target, filters.get("prefix"), filters.get("suffix"))
            grouped.setdefault(key, []).append(str(entry["Event"]))
        # SAM writes one configuration per event type; one notification per function and filter, as written
        for (target, prefix, suffix), events in grouped.items():
            arn = self.result.functions[target].arn
            bucket.notifications.append(S3Notification(target, arn, events, prefix, suffix))
        return bucket

    def _state_machine(self, logical_id: str, props: dict[str, Any]) -> StateMachineSpec:
        # moto's CloudFormation reads only DefinitionString, never substitutes, and files the machine
        # where the ASL interpreter does not look (moto 5.2.5).
        if "DefinitionS3Location" in props:
            definition_path = self._local_artifact(props["DefinitionS3Location"], "Bucket", "Key")
            if definition_path is None:
                raise TemplateError(f"{logical_id}: only a local DefinitionUri file can run locally")
            text = definition_path.read_text(encoding="utf-8")
            if definition_path.suffix in (".yaml", ".yml"):
                text = json.dumps(yaml.safe_load(text))
        elif "DefinitionString" in props:
            text = str(props["DefinitionString"])
        elif "Definition" in props:
            text = json.dumps(props["Definition"])
        else:
            raise TemplateError(f"{logical_id}: no Definition or DefinitionUri")
        substitutions = {
            str(key): _as_str(value) for key, value in (props.get("DefinitionSubstitutions") or {}).items()
        }

        # moto does not substitute: an unknown placeholder is an error here, not a broken machine later.
        def substitute(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in substitutions:
                raise TemplateError(f"{logical_id}: no DefinitionSubstitutions value for ${{{key}}}")
            return substitutions[key]

        return StateMachineSpec(
            logical_id=logical_id,
            name=self.resolver.physical_name(logical_id),
            arn=self.resolver.get_att(logical_id, "Arn"),
            definition=_SUB_PATTERN.sub(substitute, text),
            type=str(props.get("StateMachineType", "STANDARD")),
        )

    def _task_definition(self, logical_id: str, props: dict[str, Any]) -> TaskDefinitionSpec:
        # moto's CloudFormation drops a Fargate definition's cpu, storage, roles and network (moto 5.2.5).
        container = props["ContainerDefinitions"][0]
        registration = recase_keys(props, str.lower)
        for numeric in ("cpu", "memory"):  # numbers in the template, strings in the API
            if numeric in registration:
                registration[numeric] = str(registration[numeric])
        for definition in registration.get("containerDefinitions") or []:
            # moto sums its containers' figures (Fargate needs only the task's): give them the task's.
            definition.setdefault("memory", int(registration.get("memory") or 512))
            definition.setdefault("cpu", 0)
        storage = int((props.get("EphemeralStorage") or {}).get("SizeInGiB", 20))
        registration["ephemeralStorage"] = {"sizeInGiB": storage}
        return TaskDefinitionSpec(
            logical_id=logical_id,
            family=self.resolver.physical_name(logical_id),
            arn=str(self.resolver.ref(logical_id)),
            image=str(container["Image"]),
            container_name=str(container["Name"]),
            environment={
                str(pair["Name"]): _as_str(pair["Value"]) for pair in container.get("Environment") or []
            },
            registration=registration,
        )

    def _api(self, logical_id: str, props: dict[str, Any]) -> None:
        """The routes of a REST API's OpenAPI body, as SAM generates it from the functions' Api events, and
        each path's mock OPTIONS (what SAM generates for the API's `Cors`) with the headers it answers."""
        # moto's CloudFormation refuses SAM's RestApi (no Name); moto's API Gateway runs no proxy integration.
        if "Body" not in props:
            log.warning("API %s has no inline OpenAPI body (DefinitionUri?): no routes locally", logical_id)
            return
        body = self.resolver.resolve(props["Body"])
        for path, operations in (body.get("paths") or {}).items():
            for key, operation in operations.items():
                if key not in _HTTP_METHODS:
                    continue  # `parameters` and extensions beside the methods
                integration = operation.get("x-amazon-apigateway-integration") or {}
                if key == "options" and integration.get("type") == "mock":
                    default = (integration.get("responses") or {}).get("default") or {}
                    self.result.preflights[str(path)] = _headers(
                        default.get("responseParameters"), "method.response"
                    )
                match = _INTEGRATION_FUNCTION.search(str(integration.get("uri", "")))
                target = self._function_id(match.group(1)) if match else None
                if target is None:
                    log.debug("API %s: %s %s is not a function of this template", logical_id, key, path)
                    continue
                security = operation.get("security", body.get("security")) or []
                authorizer, headers, cache = self._authorizer(f"{key} {path}", security, body)
                method = "ANY" if key == _ANY_METHOD else key.upper()
                self.result.routes.append(
                    Route(str(path), method, target, authorizer, headers, logical_id, cache)
                )

    def _authorizer(
        self, operation: str, security: list[dict[str, Any]], body: dict[str, Any]
    ) -> tuple[str | None, tuple[str, ...], int]:
        """The Lambda authorizer of an operation (its function's logical id), its identity headers and
        how long its answers are cached (API Gateway's default: 300 s); (None, (), 0) for a public
        operation, or one API Gateway guards by IAM (not emulated locally)."""
        for requirement in security:
            for name in requirement:
                definition = (body.get("securityDefinitions") or {}).get(name) or {}
                authorizer = definition.get("x-amazon-apigateway-authorizer")
                if name == "NONE" or definition.get("x-amazon-apigateway-authtype") == "awsSigv4":
                    continue
                if authorizer is None or authorizer.get("type") not in ("token", "request"):
                    if definition.get("type") == "apiKey" and authorizer is None:
                        continue  # an API key requirement: not checked locally
                    raise TemplateError(f"{operation}: authorizer {name} is not a Lambda authorizer")
                match = _INTEGRATION_FUNCTION.search(str(authorizer.get("authorizerUri", "")))
                target = self._function_id(match.group(1)) if match else None
                if target is None:
                    raise TemplateError(f"{operation}: the authorizer {name} is not a function here")
                prefix = "method.request.header."
                sources = [source.strip() for source in str(authorizer.get("identitySource", "")).split(",")]
                headers = tuple(
                    source.removeprefix(prefix) for source in sources if source.startswith(prefix)
                )
                return target, headers, int(authorizer.get("authorizerResultTtlInSeconds", 300))
        return None, (), 0

    def _event_rules(self, logical_id: str, props: dict[str, Any]) -> list[EventRule]:
        # moto's EventBridge delivers to queues, log groups and buses, not to functions: local/stack.py does.
        pattern = props.get("EventPattern")
        schedule = rate_seconds(str(props.get("ScheduleExpression", "")))
        if not isinstance(pattern, dict) and schedule is None:
            log.debug("rule %s has neither an event pattern nor a rate schedule: not emulated", logical_id)
            return []
        if str(props.get("State", "ENABLED")) == "DISABLED":
            return []
        return [
            EventRule(
                name=logical_id,
                function_logical_id=self._function_id(target["Arn"]) or str(target["Arn"]),
                pattern=pattern if isinstance(pattern, dict) else None,
                schedule_seconds=schedule,
                bus=str(props.get("EventBusName") or "default").rsplit("/", 1)[-1],
            )
            for target in props.get("Targets") or []
            if ":function:" in str(target.get("Arn", ""))
        ]
