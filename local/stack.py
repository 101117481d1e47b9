"""The whole application in one process, on moto: what `make run` starts and what the e2e tests use.

One `mock_aws()` for the process (starting it again would wipe every table and bucket), moto's server
on the same in-memory state for outside tools, every resource created from template.yaml, the Lambda
hook so moto runs the real handlers, the API front, and emulations of what AWS does on its own:
deleting expired DynamoDB items (TTL), sending Step Functions "Execution Status Change" events to
the EventBridge rules of the template, and delivering what the functions put on a bus (PutEvents,
e.g. the `imagetasks` task events) to the template's rules on that bus; `published_events()` reads
what was put.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws
from moto.core.config import DefaultConfig
from moto.events.models import EventsBackend

from local import ecs, iam, loopback_guard
from local.container_runner import ContainerRunner
from local.events import matches
from local.front import ApiFront, FrontServer
from local.lambda_runtime import (
    FunctionDirectory,
    HandlerRunner,
    MotoLambdaHook,
    credentials_per_function,
)
from local.moto_fixes import local_moto_fixes, serialise_dynamodb_writes
from local.provision import client_cache, create_buckets, create_state_machines, create_tables
from local.sam_local import host_address, prepare_layer_images
from local.template import (
    ACCOUNT_ID,
    LOCAL_PARAMETER_OVERRIDES,
    REGION,
    STACK_NAME,
    EventRule,
    LocalTemplate,
    load_template,
)
from local.tokens import mint_local_token, new_local_key

log = logging.getLogger("local.stack")

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPOSITORY / "template.yaml"
DEFAULT_STATE_DIR = REPOSITORY / "local" / ".state"
SAM_LOCAL_STATE = "sam-local.json"  # in state_dir while the stack runs in containers
MOTO_CONFIG: DefaultConfig = {"stepfunctions": {"execute_state_machine": True}}
FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
EXECUTION_STATUS_CHANGE = "Step Functions Execution Status Change"

# Set before anything creates a boto3 client: the handlers' clients and ours must all land in moto.
LOCAL_AWS_ENVIRONMENT = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto's fake credentials
    "AWS_SESSION_TOKEN": "testing",
    # X-Ray has no daemon here; Powertools would otherwise try to send segments.
    "POWERTOOLS_TRACE_DISABLED": "true",
}


class DevStack:
    """Start with `start()`, stop with `stop()`; one per process at a time."""

    _running: DevStack | None = None

    def __init__(
        self,
        template_path: Path = DEFAULT_TEMPLATE,
        *,
        host: str = "127.0.0.1",
        api_port: int = 3000,
        aws_port: int | None = 5000,
        parameters: Mapping[str, str] | None = None,
        state_dir: Path = DEFAULT_STATE_DIR,
        ttl_sweep_seconds: float = 5.0,
        execution_poll_seconds: float = 0.5,
        containers: bool = False,
        aws_host: str | None = None,
    ) -> None:
        self.template_path = template_path
        self.host = host
        self._api_port = api_port
        self._aws_port = aws_port
        self._parameters = {**LOCAL_PARAMETER_OVERRIDES, **(parameters or {})}
        self.state_dir = state_dir
        self._ttl_sweep_seconds = ttl_sweep_seconds
        self._execution_poll_seconds = execution_poll_seconds
        # Where moto's endpoint listens, if not on `host` (with `containers`: the host's address on
        # the containers' network, the only one a container reaches).
        self._aws_host = aws_host
        # Every Lambda invocation on the built artifact in a container (local/container_runner.py).
        self.containers = containers
        if containers:
            # The image servers of tests and demos sit on the host's address on the containers'
            # network: a private address, which the import filter refuses unless told otherwise.
            self._parameters.setdefault("ImportAllowPrivate", "true")
        self.credentials: dict[str, iam.Credentials] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mock: Any = None
        self._moto_server: Any = None
        self._front: FrontServer | None = None
        self.hook: MotoLambdaHook | None = None
        self.ecs_hook: ecs.EcsRunHook | None = None
        self.template: LocalTemplate | None = None
        self.token_key = ""
        self._execution_status: dict[str, str] = {}
        self._client = client_cache(lambda service: boto3.client(service, region_name=REGION))
        self._published: list[tuple[str, dict[str, Any]]] = []  # (bus name, event) as put
        self._published_lock = threading.Lock()
        self._restore_put_events: Any = None
        self._image_builds: ThreadPoolExecutor | None = None
        self._worker_image: Future[None] | None = None

    # ---------------------------------------------------------------- what callers read
    @property
    def api_url(self) -> str:
        assert self._front is not None, "start() first"
        return self._front.url

    @property
    def aws_url(self) -> str | None:
        if self._moto_server is None:
            return None
        host, port = self._moto_server.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def runner(self) -> FunctionDirectory:
        assert self.hook is not None, "start() first"
        return self.hook.runner

    @property
    def handlers(self) -> HandlerRunner:
        """The in-process runner (tests that act as a function use `as_function`); not in container mode."""
        runner = self.runner
        if not isinstance(runner, HandlerRunner):
            raise RuntimeError("the stack runs its functions in containers, not in this process")
        return runner

    def bucket_names(self) -> dict[str, str]:
        return {logical_id: spec.name for logical_id, spec in self._template().buckets.items()}

    def table_names(self) -> dict[str, str]:
        return {logical_id: spec.name for logical_id, spec in self._template().tables.items()}

    def token(self, project_id: str, roles: Sequence[str] = ("member",), user_id: str | None = None) -> str:
        """A token the local authorizer accepts."""
        return mint_local_token(self.token_key, project_id, user_id or f"{project_id}-user", list(roles))

    def published_events(self, source: str | None = None, bus: str = "default") -> list[dict[str, Any]]:
        """The events put on `bus` since the stack started (oldest first; of `source` only, if
        given), as EventBridge hands them to a rule's target."""
        with self._published_lock:
            return [
                json.loads(json.dumps(event))
                for name, event in self._published
                if name == bus and (source is None or event["source"] == source)
            ]

    def _template(self) -> LocalTemplate:
        assert self.template is not None, "start() first"
        return self.template

    # ---------------------------------------------------------------- start / stop
    def start(self) -> DevStack:
        if DevStack._running is not None:
            raise RuntimeError("a local stack is already running in this process")
        os.environ.update(LOCAL_AWS_ENVIRONMENT)
        self.token_key = new_local_key()
        self._write_state("token.key", self.token_key + "\n")
        if self.containers:
            # What only podman does (the functions' layer images, the worker image: each a build, or
            # a look when nothing changed) runs beside the in-process setup, not after it.
            self._image_builds = ThreadPoolExecutor(max_workers=2, thread_name_prefix="local-images")
            self._image_builds.submit(prepare_layer_images)  # SamLocal.start waits for its answer
            self._worker_image = self._image_builds.submit(ecs.build_worker_image)

        # The ASL interpreter only runs machines created after this config is in place.
        self._mock = mock_aws(config=MOTO_CONFIG)
        self._mock.start()
        # After moto's own handler: what it does not answer (once stopped) never leaves the machine.
        loopback_guard.install()
        DevStack._running = self
        try:
            # The container runner's tasks get a subnet and security group that exist in moto.
            subnet, group = ecs.create_network(self._client("ec2"))
            self._parameters.setdefault("WorkerSubnets", subnet)
            self._parameters.setdefault("WorkerSecurityGroups", group)
            self.template = self._load()
            serialise_dynamodb_writes()
            local_moto_fixes()
            self._watch_put_events()
            # Each function's and state machine's role as `sam deploy` would create it, assumed.
            names = {logical_id: spec.name for logical_id, spec in self.template.functions.items()}
            names.update({logical_id: spec.name for logical_id, spec in self.template.state_machines.items()})
            roles = iam.template_roles(self.template)
            self.credentials = iam.create_roles(roles, names, self._client("iam"), self._client("sts"))
            credentials_per_function()
            machines = [self.credentials[m] for m in self.template.state_machines if m in self.credentials]
            if len(machines) == 1:  # the interpreter cannot tell machines apart: one role for all
                iam.state_machine_credentials(machines[0])
            iam.enforce()
            if self.containers:  # the containers' AWS calls would otherwise log a line each
                logging.getLogger("werkzeug").setLevel(logging.WARNING)
            # Containers reach the host only at its address on their network: moto listens there.
            aws_host = self._aws_host or (host_address() if self.containers else self.host)
            # The container runner's processes reach AWS through the server too.
            if self._aws_port is not None or self.containers or self.template.task_definitions:
                from moto.server import ThreadedMotoServer

                # Same process, same backends: `aws --endpoint-url` sees what the handlers see.
                self._moto_server = ThreadedMotoServer(
                    ip_address=aws_host, port=self._aws_port or 0, verbose=False
                )
                self._moto_server.start()
                # Download URLs the handlers sign (image file, export) must reach this server, not
                # AWS: every function sees it (imagetasks.config.Settings.presign_endpoint_url).
                os.environ["PRESIGN_ENDPOINT_URL"] = str(self.aws_url)
            self.hook = MotoLambdaHook(self._runner(aws_host))
            self.hook.install()
            self._create_resources(self.template)
            self._install_ecs(self.template)
            self._front = FrontServer(ApiFront(self.template, self.hook.runner), self.host, self._api_port)
            self._front.start()
            self._start_loop(
                "local-ttl-sweeper", self._ttl_sweep_seconds, "TTL sweep failed", "sweep_expired_items"
            )
            self._start_loop(
                "local-execution-events",
                self._execution_poll_seconds,
                "watching state machine executions failed",
                "publish_execution_events",
            )
            for rule in self.template.event_rules:
                if rule.schedule_seconds is not None:
                    failure = f"scheduled rule {rule.name} failed"
                    self._start_loop(
                        f"local-schedule-{rule.name}", rule.schedule_seconds, failure, "run_schedule", rule
                    )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._image_builds is not None:
            self._image_builds.shutdown(wait=True)
            self._image_builds = None
        if self._front is not None:
            self._front.stop()
            self._front = None
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self._moto_server is not None:
            self._moto_server.stop()
            self._moto_server = None
        if self.ecs_hook is not None:
            self.ecs_hook.uninstall()
            self.ecs_hook = None
        if self.hook is not None:
            self.hook.uninstall()
            if isinstance(self.hook.runner, ContainerRunner):
                (self.state_dir / SAM_LOCAL_STATE).unlink(missing_ok=True)
                self.hook.runner.stop()
        iam.relax()
        if self._restore_put_events is not None:
            self._restore_put_events()
            self._restore_put_events = None
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
            loopback_guard.install()  # on the default session moto put back
        if DevStack._running is self:
            DevStack._running = None

    def _write_state(self, name: str, text: str) -> None:
        """A file of `state_dir` only its owner reads (the signing key, or settings that carry it)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / name
        path.touch(mode=0o600)
        path.write_text(text, encoding="utf-8")

    def _load(self) -> LocalTemplate:
        template = load_template(self.template_path, self._parameters)
        # AUTH_MODE=local exists only here: the deployed template does not even allow the value.
        authorizers = {
            route.authorizer_logical_id for route in template.routes if route.authorizer_logical_id
        }
        for logical_id in authorizers:
            spec = template.functions[logical_id]
            environment = {**spec.environment, "AUTH_MODE": "local", "LOCAL_TOKEN_KEY": self.token_key}
            template.functions[logical_id] = replace(spec, environment=environment)
        return template

    def _runner(self, address: str) -> FunctionDirectory:
        assert self.template is not None
        credentials = {logical_id: creds.as_environment() for logical_id, creds in self.credentials.items()}
        if not self.containers:
            return HandlerRunner(self.template.functions.values(), credentials)
        runner = self.container_runner(address).start()
        # For `make sam-invoke ARGS=--running`: SAM's settings for this stack's functions (its
        # endpoint, credentials server and signing key among them), while it runs.
        self._write_state(SAM_LOCAL_STATE, json.dumps({"pid": os.getpid(), **runner.sam.settings()}))
        return runner

    def container_runner(self, address: str) -> ContainerRunner:
        """The built functions in containers, set up for this stack (not started): its AWS endpoint,
        each function's role credentials and environment, the authorizer's signing key. `address`:
        the host's address on the containers' network, where the endpoint must listen."""
        assert self.template is not None, "start() first"
        return ContainerRunner(
            self.template.functions.values(),
            address=address,
            aws_url=str(self.aws_url),
            credentials={
                logical_id: self.credentials[logical_id].as_json() for logical_id in self.template.functions
            },
            container_env={
                "PRESIGN_ENDPOINT_URL": str(self.aws_url),
                # The local authorizer's signing key: no template variable carries it (SAM's
                # --env-vars only sets declared ones), so every container gets it.
                "LOCAL_TOKEN_KEY": self.token_key,
            },
            parameter_overrides=self._parameters,
        )

    # ---------------------------------------------------------------- resources
    def _create_resources(self, template: LocalTemplate) -> None:
        # Not moto's CloudFormation: it refuses the translated template (moto 5.2.5; local/template.py).
        # moto checks that a function's role exists; permissions themselves are not enforced.
        role_arn = self._client("iam").create_role(
            RoleName=f"{STACK_NAME}-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        create_tables(template, self._client("dynamodb"))
        lambda_client = self._client("lambda")
        placeholder = io.BytesIO()  # the code runs from its folder; moto only needs a package
        with zipfile.ZipFile(placeholder, "w") as archive:
            archive.writestr("README.txt", "The local stack runs this function from its CodeUri folder.\n")
        for function in template.functions.values():
            lambda_client.create_function(
                FunctionName=function.name,
                Runtime=function.runtime,
                Role=role_arn,
                Handler=function.handler,
                Code={"ZipFile": placeholder.getvalue()},
                Timeout=function.timeout_seconds,
                MemorySize=function.memory_mb,
                Environment={"Variables": function.environment},
            )
        s3 = self._client("s3")
        create_buckets(template, s3)
        for bucket in template.buckets.values():
            if bucket.notifications:
                s3.put_bucket_notification_configuration(
                    Bucket=bucket.name,
                    NotificationConfiguration={
                        "LambdaFunctionConfigurations": [
                            _notification(notification) for notification in bucket.notifications
                        ]
                    },
                )
        create_state_machines(template, self._client("stepfunctions"), role_arn)
        bus = str(template.parameters.get("EventBusName") or "default")
        if bus != "default":  # the deployer's own bus exists before the stack; here it is made
            self._client("events").create_event_bus(Name=bus)

    def _install_ecs(self, template: LocalTemplate) -> None:
        """The container runner: its cluster and task definition, and RunTask running the worker."""
        if not template.task_definitions:
            return
        ecs.create_ecs_resources(template, self._client("ecs"))
        if self._worker_image is not None:
            self._worker_image.result()
        self.ecs_hook = ecs.EcsRunHook(
            template.task_definitions,
            aws_url=str(self.aws_url),
            credentials={
                logical_id: self.credentials[logical_id].as_environment()
                for logical_id in template.task_definitions
                if logical_id in self.credentials
            },
            extra_env={"PRESIGN_ENDPOINT_URL": str(self.aws_url)},
            containers=self.containers,
        )
        self.ecs_hook.install()

    def _start_loop(self, name: str, seconds: float, failure: str, method: str, *args: Any) -> None:
        """A thread calling the stack's `method` every `seconds` until the stack stops (looked up each
        time: a test may replace it on the running stack); a failure is logged, not fatal."""

        def loop() -> None:
            while not self._stopping.wait(seconds):
                try:
                    getattr(self, method)(*args)
                except Exception:
                    log.exception(failure)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ---------------------------------------------------------------- DynamoDB TTL
    def sweep_expired_items(self) -> None:
        """Delete items whose TTL attribute is a number of seconds in the past, as DynamoDB would (it
        ignores a TTL attribute that is not a number).

        The expired items are found in moto's tables directly (a Scan through the API would copy and
        serialise every item of every table twice a second: a fifth of the e2e tier's CPU went there);
        they are deleted through the API, as DynamoDB's own deletes are."""
        from moto.dynamodb.models import dynamodb_backends

        now = time.time()
        dynamodb = self._client("dynamodb")
        deleted = 0
        for spec in self._template().tables.values():
            if not spec.ttl_attribute:
                continue
            table = dynamodb_backends[ACCOUNT_ID][REGION].get_table(spec.name)
            keys = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
            for item in table.all_items():  # a snapshot (moto_fixes.snapshot_table_reads)
                expires = item.attrs.get(spec.ttl_attribute)
                if expires is not None and expires.type == "N" and float(expires.value) < now:
                    dynamodb.delete_item(
                        TableName=spec.name, Key={key: item.attrs[key].to_json() for key in keys}
                    )
                    deleted += 1
        if deleted:
            log.info("TTL: deleted %d expired item(s)", deleted)

    # ---------------------------------------------------------------- EventBridge schedules
    def run_schedule(self, rule: EventRule) -> Any:
        """Invoke the rule's target with the event EventBridge sends on a schedule; its result."""
        spec = self._template().functions[rule.function_logical_id]
        rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule.name}"
        return self.runner.invoke(spec, _event("Scheduled Event", "aws.events", {}, [rule_arn])).result()

    # ---------------------------------------------------------------- EventBridge for Step Functions
    def publish_execution_events(self) -> None:
        """Send an event for each execution status not seen yet to the rules whose pattern matches it."""
        template = self._template()
        if not template.event_rules:
            return
        stepfunctions = self._client("stepfunctions")
        for machine in template.state_machines.values():
            for page in stepfunctions.get_paginator("list_executions").paginate(stateMachineArn=machine.arn):
                for summary in page["executions"]:
                    arn, status = summary["executionArn"], summary["status"]
                    if self._execution_status.get(arn) == status:
                        continue
                    self._execution_status[arn] = status
                    if status == "RUNNING" or status in FINAL_STATUSES:
                        self._publish(
                            _status_change_event(stepfunctions.describe_execution(executionArn=arn))
                        )

    # ---------------------------------------------------------------- EventBridge for PutEvents
    def _watch_put_events(self) -> None:
        """Record every event moto's EventBridge accepts and deliver it to the template's rules
        (moto itself only delivers to rules made through its API, which the stack does not make)."""
        original = EventsBackend.put_events

        def put_events(backend: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            entries: list[dict[str, Any]] = original(backend, events)
            for sent, entry in zip(events, entries, strict=False):
                if "EventId" in entry:
                    self._event_put(sent, entry["EventId"])
            return entries

        EventsBackend.put_events = put_events  # type: ignore[method-assign,assignment]
        self._restore_put_events = functools.partial(setattr, EventsBackend, "put_events", original)

    def _event_put(self, entry: Mapping[str, Any], event_id: str) -> None:
        bus = str(entry.get("EventBusName") or "default").rsplit("/", 1)[-1]
        moment = entry.get("Time")
        event = _event(
            entry["DetailType"],
            entry["Source"],
            json.loads(entry["Detail"]),
            list(entry.get("Resources") or []),
            event_id=event_id,
            moment=moment if isinstance(moment, datetime) else None,
        )
        with self._published_lock:
            self._published.append((bus, event))
        try:
            self._publish(event, bus)
        except Exception:  # a put is accepted whatever its rules' targets do
            log.exception("delivering an event to the template's rules failed")

    def _publish(self, event: dict[str, Any], bus: str = "default") -> None:
        template = self._template()
        for rule in template.event_rules:
            if rule.bus != bus or rule.pattern is None or not matches(rule.pattern, event):
                continue
            spec = template.functions.get(rule.function_logical_id)
            if spec is None:
                continue
            log.info(
                "EventBridge: %s %s → %s",
                event["detail-type"],
                event["detail"].get("status") if isinstance(event["detail"], dict) else "",
                rule.function_logical_id,
            )
            # An asynchronous target: the error is logged by the runner, as Lambda would log it.
            self.runner.invoke(spec, event)


def _notification(notification: Any) -> dict[str, Any]:
    rules = [
        {"Name": name, "Value": value}
        for name, value in (("prefix", notification.prefix), ("suffix", notification.suffix))
        if value is not None
    ]
    configuration: dict[str, Any] = {
        "Id": notification.function_logical_id,
        "LambdaFunctionArn": notification.function_arn,
        "Events": notification.events,
    }
    if rules:
        configuration["Filter"] = {"Key": {"FilterRules": rules}}
    return configuration


def _epoch_millis(value: Any) -> int | None:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else None


def _status_change_event(execution: Mapping[str, Any]) -> dict[str, Any]:
    """What EventBridge receives from Step Functions when an execution changes status."""
    detail = {
        "executionArn": execution["executionArn"],
        "stateMachineArn": execution["stateMachineArn"],
        "name": execution.get("name"),
        "status": execution["status"],
        "startDate": _epoch_millis(execution.get("startDate")),
        "stopDate": _epoch_millis(execution.get("stopDate")),
        "input": execution.get("input"),
        "output": execution.get("output"),
        "inputDetails": {"included": True},
        "outputDetails": {"included": True} if execution.get("output") is not None else None,
        "error": execution.get("error"),
        "cause": execution.get("cause"),
    }
    return _event(EXECUTION_STATUS_CHANGE, "aws.states", detail, [execution["executionArn"]])


def _event(
    detail_type: str,
    source: str,
    detail: Any,
    resources: list[str],
    *,
    event_id: str | None = None,
    moment: datetime | None = None,
) -> dict[str, Any]:
    """An event as EventBridge hands it to a rule's target."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT_ID,
        "time": (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": resources,
        "detail": detail,
    }
