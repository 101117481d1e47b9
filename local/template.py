"""template.yaml → a plain description of the local stack, so nothing is listed twice.

The template is parsed once with a small SafeLoader that understands CloudFormation's short tags,
intrinsic functions are resolved to deterministic local values (moto's account and region), and every
resource is sorted by its Type into the specs the local stack creates. A resource type this module does
not know is skipped with a debug log: adding a function, a table or a bucket to the template makes it
appear locally without touching this file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("local.template")

ACCOUNT_ID = "123456789012"  # moto's default account: ARNs must name it for moto to find the resources
REGION = "us-east-1"
PARTITION = "aws"
STACK_NAME = "imagetasks-local"

#: Parameter values for the local stack, applied over the template's defaults (then over --param).
LOCAL_PARAMETER_OVERRIDES: dict[str, str] = {
    "ImportAllowLoopback": "true",
    "SlotPollSeconds": "1",
    "RetryIntervalSeconds": "1",
}

FUNCTION_TYPE = "AWS::Serverless::Function"
TABLE_TYPE = "AWS::DynamoDB::Table"
BUCKET_TYPE = "AWS::S3::Bucket"
STATE_MACHINE_TYPE = "AWS::Serverless::StateMachine"
LAYER_TYPE = "AWS::Serverless::LayerVersion"
API_TYPE = "AWS::Serverless::Api"
GATEWAY_RESPONSE_TYPE = "AWS::ApiGateway::GatewayResponse"
EVENTS_RULE_TYPE = "AWS::Events::Rule"
IMPLICIT_API_ID = "ServerlessRestApi"  # SAM's name for the API of events without RestApiId

# Types that exist only for permissions or deployment: nothing to emulate locally, no debug noise.
_IGNORED_TYPES = frozenset(
    {
        "AWS::S3::BucketPolicy",
        "AWS::IAM::Role",
        "AWS::IAM::Policy",
        "AWS::Lambda::Permission",
        "AWS::Logs::LogGroup",
        "AWS::CloudWatch::Alarm",
        "AWS::ApiGateway::Account",
        # The failed-invocations queue and the alarm topic: locally, a handler error is just logged.
        "AWS::SQS::Queue",
        "AWS::SNS::Topic",
        "AWS::SNS::Subscription",
    }
)


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
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
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
    events: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class StateMachineSpec:
    logical_id: str
    name: str
    arn: str
    definition: str
    type: str


@dataclass(frozen=True)
class Route:
    """One API event: a path template and method, the function behind it, and its authorizer."""

    path: str
    method: str  # upper case; ANY matches every method
    function_logical_id: str
    authorizer_logical_id: str | None  # None: the route is public (Auth: {Authorizer: NONE})
    identity_headers: tuple[str, ...]
    api_logical_id: str


@dataclass(frozen=True)
class GatewayResponse:
    status: int | None  # None: API Gateway's own status for the error stays
    template: str | None
    headers: dict[str, str]  # header → "context.requestId" or "'literal'", as API Gateway writes them


@dataclass(frozen=True)
class EventRule:
    """An EventBridge rule whose target is one of our functions (only event patterns; no schedules)."""

    name: str
    function_logical_id: str
    pattern: dict[str, Any]


@dataclass
class LocalTemplate:
    path: Path
    parameters: dict[str, Any]
    tables: dict[str, TableSpec]
    buckets: dict[str, BucketSpec]
    functions: dict[str, FunctionSpec]
    state_machines: dict[str, StateMachineSpec]
    routes: list[Route]
    gateway_responses: dict[str, GatewayResponse]  # by ResponseType (UNAUTHORIZED, DEFAULT_4XX, ...)
    stage: str
    event_rules: list[EventRule]
    skipped: dict[str, str]  # logical id → type the local stack does not emulate

    def function_by_name(self) -> dict[str, FunctionSpec]:
        return {spec.name: spec for spec in self.functions.values()}


# ------------------------------------------------------------------ intrinsic functions


_NO_VALUE = object()  # AWS::NoValue: the enclosing property disappears
_SUB_PATTERN = re.compile(r"\$\{([^}]+)\}")


def rest_api_id(logical_id: str) -> str:
    """The local REST API id: what `!Ref` of an API gives, and what appears in method ARNs."""
    return logical_id.lower()


def local_name(logical_id: str) -> str:
    """Deterministic local physical name; lower case because bucket names must be."""
    return f"{STACK_NAME}-{logical_id.lower()}"


class _Resolver:
    def __init__(self, template: dict[str, Any], parameters: dict[str, Any]) -> None:
        self._resources: dict[str, dict[str, Any]] = template.get("Resources") or {}
        self._conditions: dict[str, Any] = template.get("Conditions") or {}
        self._mappings: dict[str, Any] = template.get("Mappings") or {}
        self._parameters = parameters
        self._condition_cache: dict[str, bool] = {}

    # physical names and attributes -------------------------------------------------------------
    def physical_name(self, logical_id: str) -> str:
        resource = self._resources[logical_id]
        kind = resource.get("Type", "")
        props = resource.get("Properties") or {}
        explicit = {
            TABLE_TYPE: "TableName",
            BUCKET_TYPE: "BucketName",
            FUNCTION_TYPE: "FunctionName",
            STATE_MACHINE_TYPE: "Name",
        }.get(kind)
        if explicit and props.get(explicit) is not None:
            return str(self.resolve(props[explicit]))
        return local_name(logical_id)

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": STACK_NAME,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK_NAME}/local",
            "AWS::NotificationARNs": [],
        }
        if name in pseudo:
            return pseudo[name]
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self._parameters:
            return self._parameters[name]
        if name not in self._resources:
            raise TemplateError(f"!Ref to unknown name {name}")
        kind = self._resources[name].get("Type", "")
        if kind == STATE_MACHINE_TYPE:
            return self.get_att(name, "Arn")
        if kind == LAYER_TYPE:
            return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:layer:{local_name(name)}:1"
        if kind in (API_TYPE, "AWS::ApiGateway::RestApi"):
            return rest_api_id(name)
        if kind in (TABLE_TYPE, BUCKET_TYPE, FUNCTION_TYPE):
            return self.physical_name(name)
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:{local_name(name)}"
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{local_name(name)}"
        return name

    def get_att(self, logical_id: str, attribute: str) -> Any:
        if logical_id not in self._resources:
            raise TemplateError(f"!GetAtt of unknown resource {logical_id}")
        kind = self._resources[logical_id].get("Type", "")
        name = self.physical_name(logical_id)
        values: dict[str, str] = {}
        if kind == FUNCTION_TYPE:
            values = {"Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"}
        elif kind == TABLE_TYPE:
            arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
            values = {"Arn": arn, "StreamArn": f"{arn}/stream/local"}
        elif kind == BUCKET_TYPE:
            values = {
                "Arn": f"arn:aws:s3:::{name}",
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{REGION}.amazonaws.com",
            }
        elif kind == STATE_MACHINE_TYPE:
            values = {"Arn": f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}", "Name": name}
        elif kind in (API_TYPE, "AWS::ApiGateway::RestApi"):
            values = {"RootResourceId": "root"}
        elif kind == "AWS::SQS::Queue":
            values = {"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}", "QueueName": name}
        elif kind == "AWS::Logs::LogGroup":
            values = {"Arn": f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}:*"}
        if attribute in values:
            return values[attribute]
        log.debug("no local value for !GetAtt %s.%s; using a placeholder", logical_id, attribute)
        return f"{logical_id}.{attribute}"

    # conditions ------------------------------------------------------------------------------
    def condition(self, name: str) -> bool:
        if name not in self._condition_cache:
            if name not in self._conditions:
                raise TemplateError(f"unknown condition {name}")
            self._condition_cache[name] = bool(self.resolve(self._conditions[name]))
        return self._condition_cache[name]

    # the walk --------------------------------------------------------------------------------
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
        if name == "FindInMap":
            mapping, top, second = self.resolve(arg)
            return self._mappings[mapping][top][second]
        if name == "Base64":
            import base64

            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if name == "GetAZs":
            return [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
        raise TemplateError(f"intrinsic function Fn::{name} is not supported locally")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], self.resolve(arg[1])
        else:
            text, variables = arg, {}

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
        if name in overrides:
            raw: Any = overrides[name]
        elif "Default" in declaration:
            raw = declaration["Default"]
        else:
            raise TemplateError(f"parameter {name} has no default; pass --param {name}=...")
        allowed = declaration.get("AllowedValues")
        if allowed is not None and _as_str(raw) not in [_as_str(item) for item in allowed]:
            raise TemplateError(f"parameter {name}={raw!r} is not one of {allowed}")
        if declaration.get("Type") == "CommaDelimitedList":
            values[name] = raw if isinstance(raw, list) else [item.strip() for item in str(raw).split(",")]
        else:
            values[name] = _as_str(raw)
    return values


# ------------------------------------------------------------------ the specs


def _merge_globals(global_props: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's rules: maps merge (the function wins), lists concatenate (Globals first), scalars override."""
    merged: dict[str, Any] = dict(global_props)
    for key, value in props.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _merge_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = current + value
        else:
            merged[key] = value
    return merged


def load_template(
    path: Path,
    overrides: Mapping[str, str] | None = None,
    environment_overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> LocalTemplate:
    """Parse and resolve the template.

    `overrides` are parameter values (applied over LOCAL_PARAMETER_OVERRIDES by the caller's choice);
    `environment_overrides` maps a function's logical id (or "*" for all) to variables that replace or
    add to what the template gives it: the only way to set what the deployed template must not allow,
    such as `AUTH_MODE=local`.
    """
    raw = load_yaml(path)
    base_dir = path.parent
    parameters = resolve_parameters(raw, overrides or {})
    resolver = _Resolver(raw, parameters)
    resources: dict[str, dict[str, Any]] = raw.get("Resources") or {}
    globals_function: dict[str, Any] = ((raw.get("Globals") or {}).get("Function")) or {}
    globals_api: dict[str, Any] = ((raw.get("Globals") or {}).get("Api")) or {}
    env_overrides = environment_overrides or {}

    layer_dirs: dict[str, Path] = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") in (LAYER_TYPE, "AWS::Lambda::LayerVersion"):
            props = resource.get("Properties") or {}
            content = props.get("ContentUri") or props.get("Content")
            if isinstance(content, str):
                layer_dirs[resolver.ref(logical_id)] = _layer_python_dir(base_dir / content, resource)

    result = LocalTemplate(
        path=path,
        parameters=parameters,
        tables={},
        buckets={},
        functions={},
        state_machines={},
        routes=[],
        gateway_responses={},
        stage=str(parameters.get("Stage", "local")),
        event_rules=[],
        skipped={},
    )
    apis: dict[str, dict[str, Any]] = {}
    function_events: list[tuple[str, str, dict[str, Any]]] = []

    for logical_id, resource in resources.items():
        kind = resource.get("Type", "")
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        raw_props: dict[str, Any] = resource.get("Properties") or {}

        if kind == TABLE_TYPE:
            result.tables[logical_id] = _table_spec(logical_id, resolver, resolver.resolve(raw_props))
        elif kind == BUCKET_TYPE:
            result.buckets[logical_id] = BucketSpec(logical_id, resolver.physical_name(logical_id))
        elif kind == FUNCTION_TYPE:
            merged = _merge_globals(globals_function, raw_props)
            spec = _function_spec(logical_id, resolver, merged, base_dir, layer_dirs, env_overrides)
            result.functions[logical_id] = spec
            for event_name, event in spec.events.items():
                function_events.append((logical_id, event_name, event))
        elif kind == STATE_MACHINE_TYPE:
            result.state_machines[logical_id] = _state_machine_spec(logical_id, resolver, raw_props, base_dir)
        elif kind == API_TYPE:
            apis[logical_id] = resolver.resolve(_merge_globals(globals_api, raw_props))
        elif kind == GATEWAY_RESPONSE_TYPE:
            props = resolver.resolve(raw_props)
            templates = props.get("ResponseTemplates") or {}
            result.gateway_responses[str(props["ResponseType"])] = GatewayResponse(
                status=int(props["StatusCode"]) if props.get("StatusCode") else None,
                template=templates.get("application/json"),
                headers={
                    key.removeprefix("gatewayresponse.header."): str(value)
                    for key, value in (props.get("ResponseParameters") or {}).items()
                    if key.startswith("gatewayresponse.header.")
                },
            )
        elif kind == EVENTS_RULE_TYPE:
            result.event_rules.extend(_events_rule(logical_id, resolver.resolve(raw_props), result))
        elif kind in (LAYER_TYPE, "AWS::Lambda::LayerVersion") or kind in _IGNORED_TYPES:
            continue
        else:
            log.debug("resource %s of type %s is not emulated locally", logical_id, kind)
            result.skipped[logical_id] = kind

    # Function events need every function and bucket to be known: a second pass.
    arn_by_function = {logical_id: spec.arn for logical_id, spec in result.functions.items()}
    bucket_by_name = {spec.name: spec for spec in result.buckets.values()}
    for function_id, event_name, event in function_events:
        event_type = event.get("Type")
        props = event.get("Properties") or {}
        if event_type == "S3":
            bucket = bucket_by_name.get(str(props.get("Bucket")))
            if bucket is None:
                raise TemplateError(f"{function_id}.{event_name}: S3 event on an unknown bucket")
            events = props.get("Events")
            prefix = suffix = None
            for rule in ((props.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []:
                if str(rule.get("Name")).lower() == "prefix":
                    prefix = str(rule.get("Value"))
                elif str(rule.get("Name")).lower() == "suffix":
                    suffix = str(rule.get("Value"))
            bucket.notifications.append(
                S3Notification(
                    function_logical_id=function_id,
                    function_arn=arn_by_function[function_id],
                    events=[events] if isinstance(events, str) else list(events or []),
                    prefix=prefix,
                    suffix=suffix,
                )
            )
        elif event_type in ("Api",):
            result.routes.append(_route(function_id, props, apis))
        elif event_type in ("EventBridgeRule", "CloudWatchEvent"):
            if "Pattern" in props:
                result.event_rules.append(
                    EventRule(
                        name=f"{function_id}{event_name}",
                        function_logical_id=function_id,
                        pattern=props["Pattern"],
                    )
                )
        else:
            log.debug("event %s.%s of type %s is not emulated locally", function_id, event_name, event_type)

    # Authorizers and rule targets name functions by ARN or name; the specs use logical ids.
    by_name = {spec.name: logical_id for logical_id, spec in result.functions.items()}
    by_arn = {spec.arn: logical_id for logical_id, spec in result.functions.items()}
    for index, route in enumerate(result.routes):
        if route.authorizer_logical_id is not None:
            if route.authorizer_logical_id not in by_name:
                raise TemplateError(
                    f"{route.path}: the authorizer {route.authorizer_logical_id} is not a function here"
                )
            result.routes[index] = replace(route, authorizer_logical_id=by_name[route.authorizer_logical_id])
    result.event_rules = [
        replace(rule, function_logical_id=by_arn[rule.function_logical_id])
        if rule.function_logical_id in by_arn
        else rule
        for rule in result.event_rules
    ]
    if len({route.api_logical_id for route in result.routes}) > 1:
        raise TemplateError("several APIs in the template; the local front serves only one")
    return result


def _table_spec(logical_id: str, resolver: _Resolver, props: dict[str, Any]) -> TableSpec:
    name = resolver.physical_name(logical_id)
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    throughput = props.get("ProvisionedThroughput")
    if kwargs["BillingMode"] == "PROVISIONED":
        kwargs["ProvisionedThroughput"] = throughput or {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            kwargs[key] = props[key]
    stream = props.get("StreamSpecification")
    if stream:
        # CloudFormation names only the view type; the API also wants StreamEnabled.
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    ttl = props.get("TimeToLiveSpecification") or {}
    ttl_attribute = ttl.get("AttributeName") if _truthy(ttl.get("Enabled")) else None
    return TableSpec(logical_id=logical_id, name=name, create_kwargs=kwargs, ttl_attribute=ttl_attribute)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _layer_python_dir(content_dir: Path, resource: Mapping[str, Any]) -> Path:
    """The local folder that becomes the layer's `python/` (on Lambda, `/opt/python`).

    `sam build` with `BuildMethod: python3.x` copies the ContentUri folder itself into `python/`;
    a layer uploaded as it is (no BuildMethod) must carry `python/` in its ContentUri.
    """
    build_method = str((resource.get("Metadata") or {}).get("BuildMethod", ""))
    return content_dir if build_method.startswith("python") else content_dir / "python"


def _function_spec(
    logical_id: str,
    resolver: _Resolver,
    props: dict[str, Any],
    base_dir: Path,
    layer_dirs: Mapping[str, Path],
    env_overrides: Mapping[str, Mapping[str, str]],
) -> FunctionSpec:
    resolved = resolver.resolve(props)
    name = resolver.physical_name(logical_id)
    code_uri = resolved.get("CodeUri")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{logical_id}: only a local CodeUri folder can run locally")
    environment = {
        str(key): _as_str(value)
        for key, value in ((resolved.get("Environment") or {}).get("Variables") or {}).items()
    }
    environment.update(env_overrides.get("*", {}))
    environment.update(env_overrides.get(logical_id, {}))
    layer_paths: list[Path] = []
    for layer in resolved.get("Layers") or []:
        layer_dir = layer_dirs.get(str(layer))
        if layer_dir is None:
            log.debug(
                "%s: layer %s is not in the template; its code must already be importable", logical_id, layer
            )
            continue
        # A layer built from requirements.txt alone has no code locally (its folder holds just that
        # file): its packages come from the virtual environment.
        if layer_dir.is_dir():
            layer_paths.append(layer_dir)
    return FunctionSpec(
        logical_id=logical_id,
        name=name,
        arn=resolver.get_att(logical_id, "Arn"),
        code_dir=(base_dir / code_uri).resolve(),
        handler=str(resolved.get("Handler", "app.lambda_handler")),
        runtime=str(resolved.get("Runtime", "python3.13")),
        timeout_seconds=int(resolved.get("Timeout", 3)),
        memory_mb=int(resolved.get("MemorySize", 128)),
        environment=environment,
        layer_paths=[path.resolve() for path in layer_paths],
        # Events stay unresolved in raw_props only for Pattern keys; resolve them with the rest.
        events=dict(resolved.get("Events") or {}),
    )


def _state_machine_spec(
    logical_id: str, resolver: _Resolver, raw_props: dict[str, Any], base_dir: Path
) -> StateMachineSpec:
    props = resolver.resolve(raw_props)
    if "DefinitionUri" in props:
        uri = props["DefinitionUri"]
        if not isinstance(uri, str):
            raise TemplateError(f"{logical_id}: only a local DefinitionUri file can run locally")
        definition_path = base_dir / uri
        text = definition_path.read_text(encoding="utf-8")
        if definition_path.suffix in (".yaml", ".yml"):
            import json

            text = json.dumps(yaml.safe_load(text))
    elif "Definition" in props:
        import json

        text = json.dumps(props["Definition"])
    else:
        raise TemplateError(f"{logical_id}: no Definition or DefinitionUri")
    substitutions = {
        str(key): _as_str(value) for key, value in (props.get("DefinitionSubstitutions") or {}).items()
    }

    # moto does not substitute: an unknown placeholder is an error here rather than a broken machine later.
    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in substitutions:
            raise TemplateError(f"{logical_id}: no DefinitionSubstitutions value for ${{{key}}}")
        return substitutions[key]

    definition = _SUB_PATTERN.sub(substitute, text)
    name = resolver.physical_name(logical_id)
    return StateMachineSpec(
        logical_id=logical_id,
        name=name,
        arn=resolver.get_att(logical_id, "Arn"),
        definition=definition,
        type=str(props.get("Type", "STANDARD")),
    )


def _route(function_id: str, props: dict[str, Any], apis: Mapping[str, dict[str, Any]]) -> Route:
    # RestApiId is `!Ref SomeApi`, already resolved to the local REST API id: find the logical id back.
    by_rest_api_id = {rest_api_id(logical_id): logical_id for logical_id in apis}
    api_id = by_rest_api_id.get(str(props.get("RestApiId")), IMPLICIT_API_ID)
    api_auth = (apis.get(api_id) or {}).get("Auth") or {}
    event_auth = props.get("Auth") or {}
    authorizer = event_auth.get("Authorizer", api_auth.get("DefaultAuthorizer"))
    if authorizer in (None, "NONE", "AWS_IAM"):
        authorizer_function: str | None = None
        headers: tuple[str, ...] = ()
    else:
        definition = (api_auth.get("Authorizers") or {}).get(authorizer)
        if definition is None:
            raise TemplateError(f"{function_id}: unknown authorizer {authorizer}")
        function_arn = str(definition.get("FunctionArn", ""))
        authorizer_function = function_arn.rsplit(":function:", 1)[-1]
        identity = definition.get("Identity") or {}
        headers = tuple(str(header) for header in (identity.get("Headers") or []))
        if not headers and definition.get("FunctionPayloadType", "TOKEN") == "TOKEN":
            headers = (str(identity.get("Header", "Authorization")),)
    return Route(
        path=str(props["Path"]),
        method=str(props.get("Method", "ANY")).upper(),
        function_logical_id=function_id,
        authorizer_logical_id=authorizer_function,  # a function *name* until LocalTemplate fixes it up
        identity_headers=headers,
        api_logical_id=api_id,
    )


def _events_rule(logical_id: str, props: dict[str, Any], result: LocalTemplate) -> list[EventRule]:
    pattern = props.get("EventPattern")
    if not isinstance(pattern, dict):
        log.debug("rule %s has no event pattern (schedules are not emulated locally)", logical_id)
        return []
    rules = []
    for target in props.get("Targets") or []:
        arn = str(target.get("Arn", ""))
        if ":function:" in arn:
            rules.append(EventRule(name=logical_id, function_logical_id=arn, pattern=pattern))
    return rules
