"""IAM as on AWS, locally: each function's role, as SAM expands it, enforced by moto.

- The roles come from aws-sam-translator (the code `sam deploy` uses), run on template.yaml by
  `local/sam_translate.py` in the SAM CLI's environment; their policy documents are resolved with the
  local stack's own intrinsic resolver, so ARNs name the local tables, buckets and state machines.
- Each function's role is created in moto's IAM and assumed through moto's STS: a function runs with
  the temporary credentials of its own role, as on Lambda.
- moto checks a request's signature once IAM authentication is on; the caller's policies are
  evaluated by `local/iam_policy.py` (AWS's documented logic: Condition, NotAction, NotResource,
  case-insensitive actions), not by moto's evaluator. moto only knows the resource of S3 requests
  (every other service is checked against `*`, which no resource-scoped policy matches), and it
  checks `TransactWriteItems` as one action where AWS checks each item's own action on each item's
  table. `enforce()` adds the resource (and per-item actions) for the services the functions call:
  DynamoDB, Step Functions, Secrets Manager, EventBridge (PutEvents entry by entry, on its bus, with
  `events:source`), and the second permission of the S3 requests that need two (a copy's source,
  a delete conditional on an ETag, each key of DeleteObjects).
- Requests signed with the operator's key (the local stack itself, the tests, `aws --endpoint-url`
  from a shell, using the access key `testing`) are not checked: only the functions are confined.
  Unsigned requests are not checked either; a presigned URL is checked against the permissions of
  the role that signed it (a download URL an API function handed out needs its s3:GetObject).
- Every call a role is allowed is written down (`local/iam_ledger.py`): the least-privilege ledger
  `docs/iam.md` is made from what the tests did under each role.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from local import iam_ledger as ledger
from local import iam_policy
from local.provision import client_cache
from local.template import ACCOUNT_ID, REGION, LocalTemplate, _Resolver

log = logging.getLogger("local.iam")

#: `testing`: the local stack's and the tests' key; `FOOBARKEY`: the one `mock_aws()` puts in the
#: environment of the process it runs in.
OPERATOR_ACCESS_KEYS = frozenset({"testing", "FOOBARKEY"})


class IamSetupError(RuntimeError):
    """A role of the template cannot be emulated (one not made by SAM)."""


@dataclass(frozen=True)
class Role:
    """The role of a function or state machine as CloudFormation would create it, intrinsics resolved."""

    role_logical_id: str
    trust_policy: dict[str, Any]
    inline_policies: dict[str, dict[str, Any]]  # policy name → policy document
    managed_policy_arns: tuple[str, ...]


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str

    def as_environment(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }

    def as_json(self) -> dict[str, str]:
        """The shape of an STS answer's Credentials (what the container bootstrap reads)."""
        return {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
        }


# ------------------------------------------------------------------ the template's roles


#: The resources that run with a role of the template's, and the property that names it.
_ROLE_PROPERTY = {
    "AWS::Lambda::Function": "Role",
    "AWS::StepFunctions::StateMachine": "RoleArn",
    "AWS::ECS::TaskDefinition": "TaskRoleArn",  # the container runner's task role
}


def template_roles(local: LocalTemplate) -> dict[str, Role]:
    """Function or state machine logical id → its role, from the template aws-sam-translator made
    (`LocalTemplate.translated`), resolved against the local stack's names."""
    resolver = _Resolver(local.translated, local.parameters)
    resources: dict[str, Any] = local.translated["Resources"]
    roles: dict[str, Role] = {}
    for logical_id, resource in resources.items():
        role_property = _ROLE_PROPERTY.get(resource.get("Type", ""))
        if role_property is None:
            continue
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue  # not created with these parameters (the container runner without an image)
        role_ref = resource["Properties"].get(role_property)
        if not (isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref):
            raise IamSetupError(f"{logical_id}: a role not made by SAM ({role_ref!r}) cannot be emulated")
        role_id = role_ref["Fn::GetAtt"][0]
        properties = resources[role_id]["Properties"]
        # Policies attached to the role from outside it (AWS::IAM::Policy with Roles: [!Ref role]).
        attached = [
            {key: other["Properties"][key] for key in ("PolicyName", "PolicyDocument")}
            for other in resources.values()
            if other.get("Type") == "AWS::IAM::Policy"
            and {"Ref": role_id} in other["Properties"].get("Roles", [])
        ]
        roles[logical_id] = Role(
            role_logical_id=role_id,
            trust_policy=resolver.resolve(properties["AssumeRolePolicyDocument"]),
            # resolved as a whole first: a policy may be an `Fn::If` that leaves nothing (AWS::NoValue)
            inline_policies={
                policy["PolicyName"]: policy["PolicyDocument"]
                for policy in resolver.resolve(properties.get("Policies", []) + attached)
            },
            managed_policy_arns=tuple(resolver.resolve(properties.get("ManagedPolicyArns", []))),
        )
    return roles


#: moto role name → the logical id of what runs with it (the ledger's principal).
_ROLE_OWNERS: dict[str, str] = {}


def principal_of(caller_arn: str) -> str:
    """The logical id of the function, state machine or task definition whose role made a call
    (`arn:aws:sts::…:assumed-role/<role name>/<session>`); the caller's ARN for anyone else."""
    if ":assumed-role/" not in caller_arn:
        return caller_arn
    role_name = caller_arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
    return _ROLE_OWNERS.get(role_name, role_name)


def create_roles(
    roles: Mapping[str, Role], session_names: Mapping[str, str], iam: Any, sts: Any
) -> dict[str, Credentials]:
    """Create each role in moto and assume it; owner's logical id → the role's session credentials.

    AWS managed policies are not created (moto does not load them by default); the template attaches
    only AWSLambdaBasicExecutionRole and AWSXrayWriteOnlyAccess, which grant CloudWatch Logs and X-Ray:
    the functions reach those through the runtime, never through an SDK call.
    """
    credentials: dict[str, Credentials] = {}
    for logical_id, role in roles.items():
        role_name = f"imagetasks-local-{logical_id}"[:64]
        _ROLE_OWNERS[role_name] = logical_id
        role_arn = iam.create_role(
            RoleName=role_name, AssumeRolePolicyDocument=json.dumps(role.trust_policy)
        )["Role"]["Arn"]
        for policy_name, document in role.inline_policies.items():
            # SAM's policy templates carry no Version; IAM then reads them as 2008-10-17, which moto
            # refuses. The versions differ only in policy variables, which these documents do not use.
            versioned = {"Version": "2012-10-17", **document}
            iam.put_role_policy(
                RoleName=role_name, PolicyName=policy_name, PolicyDocument=json.dumps(versioned)
            )
        answer = sts.assume_role(
            RoleArn=role_arn,
            RoleSessionName=session_names.get(logical_id, logical_id)[:64],
            DurationSeconds=43200,
        )["Credentials"]
        credentials[logical_id] = Credentials(
            answer["AccessKeyId"], answer["SecretAccessKey"], answer["SessionToken"]
        )
    return credentials


# ------------------------------------------------------------------ enforcement in moto


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT_ID}:{resource}"


def _table_arn(item: Mapping[str, Any]) -> str:
    arn = _arn("dynamodb", f"table/{item.get('TableName', '*')}")
    return f"{arn}/index/{item['IndexName']}" if item.get("IndexName") else arn


def dynamodb_checks(action: str, body: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """(action, resource ARN) pairs AWS would authorise for one DynamoDB request."""
    if action == "TransactWriteItems":  # item by item, with each item's own action (as AWS does)
        for entry in body.get("TransactItems", []):
            for kind, item in entry.items():
                known = kind in ("Put", "Update", "Delete", "ConditionCheck")
                yield f"{kind}Item" if known else kind, _table_arn(item)
    elif action == "TransactGetItems":
        for entry in body.get("TransactItems", []):
            yield "GetItem", _table_arn(entry.get("Get", {}))
    elif action in ("BatchWriteItem", "BatchGetItem"):
        for table in body.get("RequestItems", {}):
            yield action, _table_arn({"TableName": table})
    elif "TableName" in body:
        yield action, _table_arn(body)
    else:
        yield action, "*"


def stepfunctions_checks(action: str, body: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    arns = [str(body[key]) for key in ("stateMachineArn", "executionArn", "activityArn") if key in body]
    yield action, arns[0] if arns else "*"


def lambda_checks(action: str, body: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """Lambda's REST paths name the function: /2015-03-31/functions/{name or ARN}/invocations."""
    parts = unquote(path).split("?", 1)[0].split("/")
    if "functions" in parts and parts.index("functions") + 1 < len(parts):
        name = parts[parts.index("functions") + 1].split(":function:", 1)[-1].split(":", 1)[0]
        iam_action = "InvokeFunction" if action in ("Invoke", "InvokeAsync") else action
        yield iam_action, _arn("lambda", f"function:{name}")
        return
    yield action, "*"


def secretsmanager_checks(action: str, body: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    secret_id = str(body.get("SecretId", "*"))
    if secret_id.startswith("arn:"):
        yield action, secret_id
        return
    try:
        from moto.secretsmanager.models import secretsmanager_backends

        yield action, secretsmanager_backends[ACCOUNT_ID][REGION].describe_secret(secret_id).arn
    except Exception:  # an unknown secret: AWS answers ResourceNotFound after authorising the name
        yield action, _arn("secretsmanager", f"secret:{secret_id}")


def events_checks(action: str, body: Mapping[str, Any], path: str) -> Iterator[tuple[str, ...] | Any]:
    """PutEvents is authorised entry by entry: on the entry's bus (a name or an ARN; `default` when
    unset), with its `events:source` and `events:detail-type` as condition keys."""
    if action != "PutEvents":
        name = str(body.get("EventBusName") or body.get("Name") or "")
        yield action, _bus_arn(name) if name else "*"
        return
    entries = body.get("Entries") or []
    for entry in entries:
        source, detail_type = str(entry.get("Source", "")), str(entry.get("DetailType", ""))
        context = {"events:source": source, "events:detail-type": detail_type}
        yield action, _bus_arn(str(entry.get("EventBusName") or "default")), context
    if not entries:
        yield action, "*"


def ecs_checks(action: str, body: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """RunTask is authorised on the task definition, and iam:PassRole on each of its roles; the
    task actions on each task's ARN."""
    if action == "RunTask":
        definition = str(body.get("taskDefinition", "*"))
        if not definition.startswith("arn:"):
            family, _, revision = definition.partition(":")
            definition = _arn("ecs", f"task-definition/{family}:{revision or '*'}")
        yield action, definition
        # ECS hands the task its roles (task and execution) only if the caller may pass them
        try:
            from moto.ecs.models import ecs_backends

            backend = ecs_backends[ACCOUNT_ID][REGION]
            registered = backend.describe_task_definition(str(body.get("taskDefinition", "")))
        except Exception:  # an unknown definition: ECS refuses the RunTask itself
            return
        for role_arn in (registered.task_role_arn, registered.execution_role_arn):
            if role_arn:
                yield "iam:PassRole", role_arn
        return
    for task in body.get("tasks") or ([body["task"]] if "task" in body else ["*"]):
        yield action, str(task)


def s3_checks(
    action: str, resource: str, headers: Mapping[str, Any], body: bytes, query: str
) -> Iterator[tuple[str, str]]:
    """(action, resource ARN) pairs AWS authorises for one S3 request, where moto checks only the
    first: a copy (CopyObject, UploadPartCopy) also needs s3:GetObject on its source; a delete with
    `If-Match: <ETag>` also needs s3:GetObject on the object (S3's conditional deletes: `If-Match: *`
    needs only the delete); DeleteObjects is s3:DeleteObject on each key it names, not on the bucket."""
    header = {
        str(k).lower(): (v.decode("latin-1") if isinstance(v, bytes) else str(v)) for k, v in headers.items()
    }
    parameters = {part.split("=", 1)[0] for part in query.split("&") if part}
    if "delete" in parameters and ":::" in resource and "/" not in resource.split(":::", 1)[1]:
        import xml.etree.ElementTree as ElementTree

        try:  # the body: <Delete><Object><Key>…</Key><ETag>…</ETag></Object>…
            root = ElementTree.fromstring(body or b"<Delete/>")  # noqa: S314 - moto parses the same body next
        except ElementTree.ParseError:
            return
        for element in root.iter():  # `resource` is the bucket's ARN
            fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in element}
            if element.tag.rsplit("}", 1)[-1] == "Object" and "Key" in fields:
                yield "DeleteObject", f"{resource}/{fields['Key']}"
                if fields.get("ETag"):
                    yield "GetObject", f"{resource}/{fields['Key']}"
        return
    yield action, resource
    source = header.get("x-amz-copy-source")
    if source:
        source_path = unquote(source.split("?", 1)[0]).lstrip("/")
        yield "GetObject", f"arn:aws:s3:::{source_path}"
    if action == "DeleteObject" and header.get("if-match", "*").strip() != "*":
        yield "GetObject", resource


def _bus_arn(name: str) -> str:
    return name if name.startswith("arn:") else _arn("events", f"event-bus/{name}")


_CHECKS = {
    "dynamodb": dynamodb_checks,
    "events": events_checks,
    "states": stepfunctions_checks,
    "secretsmanager": secretsmanager_checks,
    "lambda": lambda_checks,
    "ecs": ecs_checks,
}


def _signer(headers: Mapping[str, Any]) -> tuple[str, str] | None:
    """(access key, service) of the request's `Authorization: … Credential=<key>/<date>/<region>/
    <service>/…`; None when it has none."""
    value = headers.get("Authorization") or headers.get("authorization") or ""
    authorization = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    if "Credential=" not in authorization:
        return None
    credential = authorization.split("Credential=", 1)[1]
    scope = credential.split(",", 1)[0].split("/")
    return credential.split("/", 1)[0], scope[3] if len(scope) > 3 else ""


def _authorised(
    caller: str, documents: list[Any], action: str, resource: str, context: iam_policy.Context, how: str = ""
) -> bool:
    """The caller's policies' decision; each refusal logged, each allowed call recorded."""
    if iam_policy.evaluate(documents, action, resource, context) is not iam_policy.Decision.ALLOW:
        log.info("IAM: %s refused %s on %s%s", principal_of(caller), action, resource, how)
        return False
    ledger.record(principal_of(caller), action, resource)
    return True


_PATCHED = "_imagetasks_iam"


def enforce() -> None:
    """Turn on moto's IAM checks for every request not signed by the operator (idempotent)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMPolicy, IAMPolicyStatement

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    original = ActionAuthenticatorMixin._authenticate_and_authorize_action
    if getattr(original, _PATCHED, False):
        return

    def authorise(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        if math.isinf(settings.INITIAL_NO_AUTH_ACTION_COUNT):  # relaxed: moto's default, no checks
            return
        signer = _signer(self.headers)
        if signer is None:
            _authorise_presigned(self, resource)
            return
        key, service = signer
        if key in OPERATOR_ACCESS_KEYS:
            return
        items = _checked_items(self, service, resource)
        if not items:  # an empty batch or transaction: nothing to authorise
            return
        query = urlparse(self.uri).query
        path = f"{self.raw_path}?{query}" if query else self.raw_path
        # One request, one signature and one caller, whatever the number of items.
        request = iam_request_cls(
            account_id=self.current_account,
            method=self.method,
            path=path,
            data=self.data,
            body=self.raw_body,
            headers=self.headers,
            action=items[0][0],
        )
        request.check_signature()
        common = {"aws:SecureTransport": "true" if self.uri.startswith("https") else "false"}
        documents: list[Any] | None = None
        for item_action, item_resource, *item_context in items:
            # moto's `<service>:<action>`, unless the item is another service's action (iam:PassRole)
            request._action = item_action if ":" in item_action else f"{request._service}:{item_action}"
            if request._action == "sts:GetCallerIdentity":  # needs no permission, on AWS too
                continue
            if documents is None:
                documents = [
                    IAMPolicy(policy)._policy_json for policy in request._access_key.collect_policies()
                ]
            context = {**common, **(item_context[0] if item_context else {})}
            if not _authorised(request._access_key.arn, documents, request._action, item_resource, context):
                request._raise_access_denied()

    setattr(authorise, _PATCHED, True)
    ActionAuthenticatorMixin._authenticate_and_authorize_action = authorise  # type: ignore[method-assign]
    IAMPolicyStatement._match = staticmethod(iam_policy.glob_match)  # type: ignore[method-assign,assignment]


def _checked_items(response: Any, service: str, resource: str) -> list[tuple[Any, ...]]:
    """(action, resource[, condition context]) of each thing the request does: one, or one per
    item of a batch or transaction."""
    action = response._get_action()
    if service == "s3":
        query = urlparse(response.uri).query
        return list(s3_checks(action, resource, response.headers, response.raw_body or b"", query))
    checks = _CHECKS.get(service)
    if checks is None:
        return [(action, resource)]
    try:
        body = json.loads(response.raw_body or b"{}")
    except ValueError:
        body = {}
    return list(checks(action, body if isinstance(body, dict) else {}, response.raw_path))


def _authorise_presigned(response: Any, resource: str) -> None:
    """A presigned S3 URL (a download URL an API function handed out) is used with the permissions
    of whoever signed it, at the time of use: GetObject of the signing role. Its signature is not
    checked here (moto checks none for presigned requests); the role's permission is."""
    from moto.iam.access_control import IAMPolicy, create_access_key
    from moto.s3.exceptions import S3AccessDeniedError

    query = dict(part.split("=", 1) for part in urlparse(response.uri).query.split("&") if "=" in part)
    credential = unquote(query.get("X-Amz-Credential", ""))
    token = unquote(query.get("X-Amz-Security-Token", ""))
    key = credential.split("/", 1)[0]
    if not key or key in OPERATOR_ACCESS_KEYS or not token or "/s3/" not in credential:
        return
    try:
        signer = create_access_key(ACCOUNT_ID, "aws", key, {"X-Amz-Security-Token": token})
    except Exception:  # not one of the roles' sessions: nothing the local stack confines
        return
    action = f"s3:{response._get_action()}"
    documents = [IAMPolicy(policy)._policy_json for policy in signer.collect_policies()]
    if not _authorised(signer.arn, documents, action, resource, {}, " (presigned)"):
        raise S3AccessDeniedError()


def relax() -> None:
    """Back to moto's default: nothing is checked (the stack calls this when it stops)."""
    from moto import settings

    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")


def state_machine_credentials(credentials: Credentials) -> None:
    """moto's ASL interpreter calls Lambda (and other services) with a fixed fake key; make it sign
    with the workflow's role instead, so `LambdaInvokePolicy` and friends are enforced too."""
    import importlib

    import boto3
    from botocore.config import Config

    # imported now, so the loop below finds the module that holds the Lambda task's client factory
    importlib.import_module("moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils")
    service = "moto.stepfunctions.parser.asl.component.state.exec.state_task.service"
    for integration in ("ecs", "dynamodb"):  # runTask.sync, getItem: also signed with the role
        importlib.import_module(f"{service}.state_task_service_{integration}")

    clients = client_cache(
        lambda region, service: boto3.client(
            service_name=service,
            region_name=region,
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
            config=Config(parameter_validation=False, retries={"max_attempts": 0, "total_max_attempts": 1}),
        )
    )

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        return clients(region, service)

    for name, module in list(sys.modules.items()):
        if name.startswith("moto.stepfunctions.parser") and hasattr(module, "boto_client_for"):
            setattr(module, "boto_client_for", boto_client_for)  # noqa: B010 - a module, not a type
