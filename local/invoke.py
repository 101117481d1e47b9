"""`python -m local.invoke [FUNCTION] EVENT` (what `make invoke` runs): one function of template.yaml
with an event file, as `sam local invoke -e EVENT FUNCTION` would, but without Docker: on a local
stack started in this process (every resource of the template, in memory, gone when it exits; what
the function starts, a workflow execution say, runs on it). The payload goes to stdout as JSON,
everything else (the function's logs, the stack's) to stderr; the exit status is 1 when the function
errored (an unhandled exception: Lambda's error payload), 2 when the event or the function (with
`--sam`, also the container tier) cannot be used, else 0, also for an API answer that is a 4xx.

Without FUNCTION (logical id, name or ARN) the event says which function it is for: an API proxy
event by its route, an authorizer event by its route's authorizer, an S3 event by the template's
bucket notification, an EventBridge event by the rule it matches, a workflow step's payload by the
state machine's state whose Lambda payload it is.

The event is the file's, except where the local stack cannot match it (`prepare_event`):
- an S3 event naming a bucket the stack does not have gets the bucket whose notification invokes
  the function, and an object is put at the event's key when none is there (the 1 MiB raw sample
  image, so the import it starts works; without notification: the event is that notification); the
  record's ETag, size and version then describe the object at the key, as S3 would (an event naming
  a local bucket and an existing object is left as it is, to try a stale ETag, say);
- an authorizer event whose token header holds `replace-with-a-token` gets a local token of
  `--project` instead (any other value is sent as it is, to try a bad token);
- API proxy events are sent as they are: they carry what API Gateway adds
  (`requestContext.authorizer`), as `events/tasks_api_*.json` do;
- what an event needs to exist first is made first, by the stack's own functions, wherever one of
  these placeholders stands in a string of the event (owned by the event's project,
  `requestContext.authorizer.project_id`, or `--project`): `replace-with-a-task-id` a processing
  task with no execution behind it (a convert or export task for those steps, else an import task
  of a small raw image uploaded for it), `replace-with-a-pending-task-id` a pending import task,
  `replace-with-an-image-id` an active image (that import's fetch, register and success),
  `replace-with-a-queued-image-id` a queued image (`POST /v2/images`), `replace-with-a-shared-image-id`
  a queued `shared` image offered to `project-b`, `replace-with-the-staged-import` the fetch step's
  output for the task (the whole value), `replace-with-an-image-url` a loopback URL serving that image.

With `--sam` (what `make sam-invoke` runs) the built function runs through SAM's own `sam local
invoke`, in a Lambda-like container, against such a stack; the command is printed on stderr first.
Alone, `sam local invoke -t .aws-sam/build/template.yaml` runs it with nothing to talk to: resource
names unresolved (a table's name is its logical id: the API answers 409 or 500), no signing key for
local tokens (the authorizer refuses every token), S3 events naming a deployed stack's bucket, AWS
calls going to AWS. So the stack's AWS endpoint listens on the host's address on the containers'
network (the only address a container reaches), the event is made to fit as above, and SAM gets the
stack's variables as container mode does (`DevStack.container_runner`): `--env-vars` with every
function's environment as the stack resolved it; for every container the endpoint, the authorizer's
signing key and a credentials server handing each function its own role's keys.

`--sam --running` calls the function of a `make run ARGS=--containers` going on instead, with the
SAM settings that stack writes to `local/.state/sam-local.json` while it runs (its endpoint,
credentials server and signing key among them), so what the function does lands in that stack. The
event is sent as it is, but for `replace-with-a-token` (a token signed with that stack's key): an
event with other placeholders (made only on a fresh stack) or naming a bucket the stack does not
have is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from local.container_runner import INVOKE_GRACE_SECONDS
from local.events import matches
from local.front import route_for
from local.lambda_runtime import Invocation, is_s3_event
from local.sam_local import ContainerTierError, SamLocal, host_address, missing_prerequisites
from local.stack import DEFAULT_STATE_DIR, DEFAULT_TEMPLATE, SAM_LOCAL_STATE, DevStack
from local.template import (
    ACCOUNT_ID,
    LOCAL_PARAMETER_OVERRIDES,
    FunctionSpec,
    LocalTemplate,
    find_function,
    load_template,
)
from local.tokens import mint_local_token

log = logging.getLogger("local.invoke")

#: The token header value of events/authorizer_request.json, replaced by a local token.
PLACEHOLDER_TOKEN = "replace-with-a-token"  # noqa: S105 - a placeholder, not a secret
DEFAULT_PROJECT = "demo-project"
#: What the state placeholders stand for (the module docstring), and the image they import.
PLACEHOLDER = re.compile(r"replace-with-[a-z-]+")
PLACEHOLDER_STAGED = "replace-with-the-staged-import"
SAMPLE_IMAGE = bytes(1024 * 1024)  # a 1 MiB raw disk: every check and qemu-img take it
SAMPLE_NAME = "invoke-sample.raw"
#: What an S3 event's key gets when it holds nothing: the sample image, so the import it starts works.
PLACEHOLDER_OBJECT = SAMPLE_IMAGE


class InvokeError(Exception):
    """The function or the event cannot be used (exit status 2, as for a usage error)."""


# ------------------------------------------------------------------ which function


def _is_authorizer_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("type") == "REQUEST" and "methodArn" in event


def function_for_event(template: LocalTemplate, event: Any) -> str:
    """The logical id of the function the event is for, as the template wires it."""
    if is_s3_event(event):
        targets = {
            notification.function_logical_id
            for bucket in template.buckets.values()
            for notification in bucket.notifications
        }
        if len(targets) == 1:
            return targets.pop()
        raise InvokeError(f"S3 events go to {sorted(targets) or 'no function'}: name the function")
    if isinstance(event, dict) and "resource" in event and "httpMethod" in event:
        route = route_for(template.routes, event["resource"], event["httpMethod"])
        if route is None:
            raise InvokeError(f"no route {event['httpMethod']} {event['resource']} in the template")
        if _is_authorizer_event(event):
            if route.authorizer_logical_id is None:
                raise InvokeError(f"{event['httpMethod']} {event['resource']} has no authorizer")
            return str(route.authorizer_logical_id)
        return str(route.function_logical_id)
    if isinstance(event, dict) and "detail-type" in event and "source" in event:
        scheduled = event["detail-type"] == "Scheduled Event"
        targets = {
            rule.function_logical_id
            for rule in template.event_rules
            if (
                rule.schedule_seconds is not None
                if scheduled
                else rule.pattern and matches(rule.pattern, event)
            )
        }
        if len(targets) == 1:
            return targets.pop()
        raise InvokeError(f"EventBridge rules of {sorted(targets) or 'no function'} match: name the function")
    if isinstance(event, dict) and "task_id" in event:
        targets = {
            logical_id for logical_id, payload in workflow_payloads(template) if payload_fits(payload, event)
        }
        if len(targets) == 1:
            return targets.pop()
    raise InvokeError("cannot tell which function this event is for: name the function")


def workflow_payloads(template: LocalTemplate) -> list[tuple[str, dict[str, Any]]]:
    """(function logical id, Payload) of every Lambda task state of the template's state machines."""
    by_arn = {spec.arn: logical_id for logical_id, spec in template.functions.items()}
    found: list[tuple[str, dict[str, Any]]] = []
    for machine in template.state_machines.values():
        for state in json.loads(machine.definition).get("States", {}).values():
            parameters = state.get("Parameters") or {}
            if str(state.get("Resource", "")).startswith("arn:aws:states:::lambda:invoke"):
                logical_id = by_arn.get(str(parameters.get("FunctionName")))
                if logical_id is not None and isinstance(parameters.get("Payload"), dict):
                    found.append((logical_id, parameters["Payload"]))
    return found


def payload_fits(payload: dict[str, Any], event: dict[str, Any]) -> bool:
    """The event has the payload's fields: its constants with their values, its paths (`key.$`) at all."""
    return all(
        key.removesuffix(".$") in event if key.endswith(".$") else event.get(key) == value
        for key, value in payload.items()
    )


# ------------------------------------------------------------------ the event, made to fit


def prepare_event(
    stack: DevStack,
    logical_id: str,
    event: Any,
    project: str = DEFAULT_PROJECT,
    image_url: str | None = None,
) -> Any:
    """The event with what the local stack needs changed (a copy; the module docstring says what)."""
    context = (event.get("requestContext") or {}).get("authorizer") if isinstance(event, dict) else None
    owner = str(context.get("project_id") or project) if isinstance(context, dict) else project
    event = _fill(event, _Seeds(stack, logical_id, owner, image_url))
    if is_s3_event(event):
        for record in event["Records"]:
            _fit_s3_record(stack, logical_id, record)
    elif _is_authorizer_event(event):
        put_token(event, stack.token(project))
    return event


def put_token(event: dict[str, Any], token: str) -> None:
    """`token` in an authorizer event's headers wherever they hold PLACEHOLDER_TOKEN."""
    for headers in (event.get("headers") or {}, event.get("multiValueHeaders") or {}):
        for name, value in headers.items():
            if value == PLACEHOLDER_TOKEN:
                headers[name] = token
            elif isinstance(value, list):
                headers[name] = [token if item == PLACEHOLDER_TOKEN else item for item in value]


def _fit_s3_record(stack: DevStack, logical_id: str, record: dict[str, Any]) -> None:
    assert stack.template is not None, "start() first"
    s3 = record.setdefault("s3", {})
    bucket = s3.setdefault("bucket", {})
    obj = s3.setdefault("object", {})
    foreign = bucket.get("name") not in {spec.name for spec in stack.template.buckets.values()}
    if foreign:
        notified = [
            spec.name
            for spec in stack.template.buckets.values()
            if any(n.function_logical_id == logical_id for n in spec.notifications)
        ]
        if len(notified) != 1:
            raise InvokeError(
                f"the event's bucket {bucket.get('name')!r} is not a bucket of the local stack, and "
                f"{logical_id} is notified by {notified or 'no bucket'}: name a local bucket in the event"
            )
        log.info("bucket %s → %s (the local stack's)", bucket.get("name"), notified[0])
        bucket["name"] = notified[0]
        bucket["arn"] = f"arn:aws:s3:::{notified[0]}"
    raw_key = obj.get("key")
    if not isinstance(raw_key, str) or not raw_key:
        return
    stored, placed = _object_at(bucket["name"], unquote_plus(raw_key))  # keys arrive URL-encoded
    if foreign or placed:
        # The event then stands for the object at the key: it says what S3 would say of that one
        # (a deployed stack's ETag and version would name an object this stack never had).
        obj["eTag"] = stored.etag.strip('"')
        obj["size"] = stored.size
        if stored.version_id in (None, "", "null"):
            obj.pop("versionId", None)  # S3 sends none for a bucket that does not keep versions
        else:
            obj["versionId"] = stored.version_id


def _object_at(bucket: str, key: str) -> tuple[Any, bool]:
    """moto's object at the key, put there (PLACEHOLDER_OBJECT) if there was none; and whether it was put."""
    # Through moto's backend, not the S3 API: a PUT would notify the function, which would then run
    # twice (once for that notification, once for the event file that stands for it).
    from moto.s3.models import s3_backends

    backend = s3_backends[ACCOUNT_ID]["aws"]
    existing = backend.get_bucket(bucket).keys.get(key)
    if existing is not None:
        return existing, False
    log.info("put a placeholder object at s3://%s/%s", bucket, key)
    return backend.put_object(bucket, key, PLACEHOLDER_OBJECT, disable_notification=True), True


def _fill(value: Any, seeds: _Seeds) -> Any:
    """A copy of `value` with every state placeholder replaced by what it stands for."""
    if isinstance(value, dict):
        return {key: _fill(item, seeds) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, seeds) for item in value]
    if value == PLACEHOLDER_STAGED:
        return seeds.staged()
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda match: seeds.text(match.group(0)), value)
    return value


class _Seeds:
    """What an event's placeholders stand for, made on first use by the stack's own functions, as
    the workflow would: a task stored pending (as the API stores it, without starting an execution:
    nothing else acts on it), its slot taken by the workflow's TakeSlot payload, the import steps."""

    def __init__(self, stack: DevStack, logical_id: str, project: str, image_url: str | None) -> None:
        self.stack, self.logical_id, self.project, self.image_url = stack, logical_id, project, image_url
        self.made: dict[str, Any] = {}

    def text(self, placeholder: str) -> str:
        if placeholder == PLACEHOLDER_TOKEN:
            return placeholder  # the authorizer's, replaced by `prepare_event` (only in its headers)
        makers = {
            "replace-with-a-task-id": self._task_id,
            "replace-with-a-pending-task-id": lambda: self._pending_task("import", self._import_input()),
            "replace-with-an-image-id": self._active_image,
            "replace-with-a-queued-image-id": self._queued_image,
            "replace-with-a-shared-image-id": self._shared_image,
            "replace-with-an-image-url": self._image_url,
        }
        if placeholder not in makers:
            raise InvokeError(f"unknown placeholder {placeholder!r} (known: {', '.join(sorted(makers))})")
        if placeholder not in self.made:
            self.made[placeholder] = makers[placeholder]()
        return str(self.made[placeholder])

    def staged(self) -> Any:
        task_id = self.text("replace-with-a-task-id")
        return self._call("ImportTaskFunction", {"step": "fetch", "task_id": task_id})

    def _task_id(self) -> str:
        if self.logical_id in ("ConvertTaskFunction", "ExportTaskFunction"):
            kind = "convert" if self.logical_id == "ConvertTaskFunction" else "export"
            target = {"disk_format": "qcow2"} if kind == "convert" else {}
            return self._processing_task(kind, {"image_id": self._active_image(), **target})
        return self._processing_task("import", self._import_input())

    def _active_image(self) -> str:
        task_id = self._processing_task("import", self._import_input())
        staged = self._call("ImportTaskFunction", {"step": "fetch", "task_id": task_id})
        registered = self._call(
            "ImportTaskFunction", {"step": "register", "task_id": task_id, "staged": staged}
        )
        self._call("TaskStatusFunction", {"action": "succeed", "task_id": task_id, "result": registered})
        return str(registered["image_id"])

    def _queued_image(self, **fields: str) -> str:
        body = {"name": "invoke-sample", "disk_format": "raw", "container_format": "bare", **fields}
        return str(self._post("/v2/images", body)["id"])

    def _shared_image(self) -> str:
        """A queued image with visibility `shared`, offered to `project-b` (pending)."""
        image_id = self._queued_image(visibility="shared")
        self._post(f"/v2/images/{image_id}/members", {"member": "project-b"})
        return image_id

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the local front's http:// URL
            f"{self.stack.api_url}{path}",
            data=json.dumps(body).encode(),
            headers={"X-Auth-Token": self.stack.token(self.project), "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - the local front
            return json.loads(response.read())

    def _image_url(self) -> str:
        if self.image_url is None:
            raise InvokeError("the event imports from a served image, and none is served here")
        return self.image_url

    def _import_input(self) -> dict[str, Any]:
        """An import of the sample image, uploaded under the project's prefix (no notification)."""
        uploads = self.stack.bucket_names()["UploadsBucket"]
        key = f"uploads/{self.project}/{SAMPLE_NAME}"
        _object_at(uploads, key)
        return {
            "import_from": f"s3://{uploads}/{key}",
            "import_from_format": "raw",
            "image_properties": {"name": "invoke-sample", "disk_format": "raw", "container_format": "bare"},
        }

    def _pending_task(self, kind: str, task_input: dict[str, Any]) -> str:
        from imagetasks.adapters.tasks_table import TasksTable
        from imagetasks.domain.tasks import TaskType, new_task

        tables = self.stack.table_names()
        task = new_task(TaskType(kind), task_input, self.project, user_id=f"{self.project}-user")
        TasksTable(tables["TasksTable"], tables["TaskSlotsTable"]).create(task)
        return task.id

    def _processing_task(self, kind: str, task_input: dict[str, Any]) -> str:
        task_id = self._pending_task(kind, task_input)
        # The TakeSlot state's payload; the token names no waiting state (resuming it is refused
        # with InvalidToken, which the step ignores as it does a state that timed out).
        took = self._call(
            "TaskStatusFunction", {"action": "wait_for_slot", "task_id": task_id, "token": "none"}
        )
        if not took.get("started"):
            raise InvokeError(f"no free processing slot for the {kind} task this event needs")
        return task_id

    def _call(self, logical_id: str, payload: dict[str, Any]) -> Any:
        spec = self.stack.runner.spec(logical_id)
        assert spec is not None, logical_id
        invocation = self.stack.runner.invoke(spec, payload)
        if invocation.errored:
            raise InvokeError(f"making what the event needs: {logical_id} errored: {invocation.payload}")
        return invocation.result()


# ------------------------------------------------------------------ the call


def function_spec(template: LocalTemplate, function: str | None, event: Any) -> FunctionSpec:
    """The function to run: `function` (logical id, name or ARN), or the one the event is for."""
    logical_id = function or function_for_event(template, event)
    spec = find_function(template.functions, logical_id)
    if spec is None:
        known = ", ".join(sorted(template.functions))
        raise InvokeError(f"no function {logical_id!r} in the template (functions: {known})")
    return spec


def invoke_event(
    stack: DevStack,
    function: str | None,
    event: Any,
    project: str = DEFAULT_PROJECT,
    image_url: str | None = None,
) -> tuple[str, Invocation]:
    """Run one function of the running stack with `event` (made to fit): its logical id and result.
    `image_url`: where the sample image is served, for `replace-with-an-image-url`."""
    spec, prepared = _fitted(stack, function, event, project, image_url)
    return spec.logical_id, stack.runner.invoke(spec, prepared)


def _fitted(
    stack: DevStack, function: str | None, event: Any, project: str, image_url: str | None
) -> tuple[FunctionSpec, Any]:
    """The function to run on the running stack, and `event` made to fit it (prepare_event)."""
    assert stack.template is not None, "start() first"
    spec = function_spec(stack.template, function, event)
    return spec, prepare_event(stack, spec.logical_id, event, project, image_url)


def read_event(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvokeError(f"cannot read the event file: {error}") from error
    except ValueError as error:
        raise InvokeError(f"{path} is not JSON: {error}") from error


def serve_sample_image(host: str = "127.0.0.1") -> tuple[str, int]:
    """Serve SAMPLE_IMAGE on `host` (loopback; a free port, for this process's life): its URL and port."""

    class Sample(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == f"/{SAMPLE_NAME}"
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(SAMPLE_IMAGE) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(SAMPLE_IMAGE)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Sample)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = int(server.server_address[1])
    return f"http://{host}:{port}/{SAMPLE_NAME}", port


def invoke_fresh(
    event: Any, function: str | None, template: Path, project: str, state_dir: Path, sam: bool = False
) -> tuple[str, Invocation]:
    """(logical id, the invocation) of one function with `event` on a fresh stack: in-process, or
    (`sam`) the built function through `sam local invoke`, the stack's AWS endpoint and the sample
    image then on the host's address on the containers' network, where a container reaches them."""
    address = host_address() if sam else "127.0.0.1"
    image_url, port = serve_sample_image(address)
    parameters = {"ImportAllowedPorts": f"{LOCAL_PARAMETER_OVERRIDES['ImportAllowedPorts']},{port}"}
    if sam:  # the host's address on the containers' network is private
        parameters["ImportAllowPrivate"] = "true"
    stack = DevStack(
        template,
        api_port=0,
        aws_port=0 if sam else None,
        aws_host=address if sam else None,
        parameters=parameters,
        state_dir=state_dir,
    ).start()
    if not sam:
        return invoke_event(stack, function, event, project, image_url)
    spec, prepared = _fitted(stack, function, event, project, image_url)
    runner = stack.container_runner(address).start(start_lambda=False)
    try:
        return _invoke_once(runner.sam, spec, prepared)
    finally:
        runner.stop()


def sam_invoke_running(
    event: Any, function: str | None, template: Path, project: str, state_dir: Path
) -> tuple[str, Invocation]:
    """As `invoke_fresh` with `sam`, against the `make run ARGS=--containers` of `state_dir`."""
    path = state_dir / SAM_LOCAL_STATE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(settings.pop("pid")), 0)
    except (OSError, ValueError, KeyError) as error:
        raise ContainerTierError(
            f"no `make run ARGS=--containers` running here ({path}: {error}); leave out --running "
            "for a stack of this command's own"
        ) from error
    running = load_template(template, settings["parameter_overrides"])
    spec = function_spec(running, function, event)
    if isinstance(event, dict):  # an authorizer event's token placeholder: signed with that stack's key
        key = (state_dir / "token.key").read_text(encoding="utf-8").strip()
        put_token(event, mint_local_token(key, project, f"{project}-user", ["member"]))
    left = sorted(set(PLACEHOLDER.findall(json.dumps(event))) - {PLACEHOLDER_TOKEN})
    if left:
        raise InvokeError(
            f"the event holds {', '.join(left)}, which only a fresh stack makes: leave out --running"
        )
    buckets = {bucket.name for bucket in running.buckets.values()}
    for record in (event.get("Records") or []) if isinstance(event, dict) else []:
        named = (((record or {}).get("s3") or {}).get("bucket") or {}).get("name")
        if named is not None and named not in buckets:
            raise InvokeError(
                f"the event names bucket {named!r}; the running stack's are {', '.join(sorted(buckets))}"
            )
    sam = SamLocal(**settings).start(start_lambda=False)
    try:
        return _invoke_once(sam, spec, event)
    finally:
        sam.stop()


def _invoke_once(sam: SamLocal, spec: FunctionSpec, event: Any) -> tuple[str, Invocation]:
    """(logical id, invocation) of `sam local invoke` of the function; its command and logs on stderr."""
    command = shlex.join(sam.invoke_command(spec.logical_id, Path("<event>")))
    print(f"sam-invoke: {command}", file=sys.stderr, flush=True)
    payload, errored, logs = sam.invoke_once(
        spec.logical_id, event, timeout=spec.timeout_seconds + INVOKE_GRACE_SECONDS
    )
    sys.stderr.write(logs)
    return spec.logical_id, Invocation(payload=payload, errored=errored, logs=logs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.invoke",
        description="Invoke one function of template.yaml with an event file, on a local stack in this "
        "process; with --sam, the built function through `sam local invoke`, in a container.",
    )
    parser.add_argument(
        "function", nargs="?", help="logical id (name or ARN also do); default: from the event"
    )
    parser.add_argument("event", type=Path, help="event file, e.g. events/tasks_api_list.json")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument(
        "--project",
        default=DEFAULT_PROJECT,
        help=f"project of the token put in authorizer events ({PLACEHOLDER_TOKEN!r})",
    )
    parser.add_argument("--sam", action="store_true", help="through `sam local invoke` (make sam-invoke)")
    parser.add_argument(
        "--running",
        action="store_true",
        help="with --sam: against the `make run ARGS=--containers` going on, not a fresh stack",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="with --running: the stack's state"
    )
    parser.add_argument("--log-level", default="WARNING", help="the local stack's own log lines (stderr)")
    args = parser.parse_args(argv)
    if args.running and not args.sam:
        parser.error("--running goes with --sam")
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.sam:  # moto's server: a line per AWS call of the container
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # The real stdout is kept for the payload; everything else written to fd 1 (Powertools' logger,
    # print, child processes) goes to stderr, as `sam local invoke` separates them.
    sys.stdout.flush()
    payload_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        event = read_event(args.event)
        if args.sam and (reason := missing_prerequisites()):
            raise ContainerTierError(reason)
        if args.running:
            logical_id, invocation = sam_invoke_running(
                event, args.function, args.template, args.project, args.state_dir
            )
        else:
            # A state dir of its own: the default one holds the token key of a `make run` going on.
            with tempfile.TemporaryDirectory(prefix="imagetasks-invoke-") as state_dir:
                logical_id, invocation = invoke_fresh(
                    event, args.function, args.template, args.project, Path(state_dir), args.sam
                )
    except (InvokeError, ContainerTierError) as error:
        print(f"make {'sam-invoke' if args.sam else 'invoke'}: {error}", file=sys.stderr)
        return 2
    payload_out.write(invocation.payload + "\n")
    payload_out.flush()
    if invocation.errored:
        print(f"{logical_id} errored (payload on stdout)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The stack is not stopped: work the invocation started (a workflow execution, say) may still
    # run on daemon threads, and once moto's mock stopped their AWS calls would leave this machine.
    # Everything is in memory; ending the process ends it.
    os._exit(status)
