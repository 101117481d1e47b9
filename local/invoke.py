"""`python -m local.invoke [FUNCTION] EVENT` (what `make invoke` runs): one function of template.yaml
with an event file, as `sam local invoke -e EVENT FUNCTION` would, but without Docker: on a local
stack started in this process (every resource of the template, in memory, gone when it exits).

The payload goes to stdout as JSON, everything else (the function's logs, the stack's) to stderr;
the exit status is 1 when the function errored (an unhandled exception: Lambda's error payload),
0 otherwise, also for an API answer that is a 4xx. FUNCTION (logical id, name or ARN) may be left
out when the event says which function it is for: an API proxy event by its route, an authorizer
event by the authorizer of its route, an S3 event by the bucket notification of the template.

The event is the file's, except where the local stack cannot match it (see `prepare_event`):
- S3 events name a bucket of the deployed stack: a bucket the stack does not have becomes the
  bucket whose notification invokes the function, and an object is put at the event's key when
  none is there (a small placeholder, without notification: the event is that notification). The
  record's ETag, size and version then describe the object at the key, as S3 would (an event that
  names a local bucket and an existing object is left as it is, to try a stale ETag, say);
- an authorizer event whose token header holds the placeholder `replace-with-a-token` gets a local
  token of `--project` instead (any other value is sent as it is, to try a bad token);
- API proxy events are sent as they are: they carry what API Gateway adds
  (`requestContext.authorizer`), as `events/tasks_api_*.json` do.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from local.lambda_runtime import Invocation
from local.stack import DEFAULT_TEMPLATE, DevStack
from local.template import ACCOUNT_ID, LocalTemplate, Route

log = logging.getLogger("local.invoke")

#: The token header value of events/authorizer_request.json, replaced by a local token.
PLACEHOLDER_TOKEN = "replace-with-a-token"  # noqa: S105 - a placeholder, not a secret
DEFAULT_PROJECT = "demo-project"
PLACEHOLDER_OBJECT = b"imagetasks: placeholder object put by `make invoke` for an S3 event\n"


class InvokeError(Exception):
    """The function or the event cannot be used (exit status 2, as for a usage error)."""


# ------------------------------------------------------------------ which function


def _is_s3_event(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(record, dict) and record.get("eventSource") == "aws:s3" for record in records)
    )


def _is_authorizer_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("type") == "REQUEST" and "methodArn" in event


def _route_of(template: LocalTemplate, event: dict[str, Any]) -> Route | None:
    resource, method = event.get("resource"), event.get("httpMethod")
    routes = [route for route in template.routes if route.path == resource]
    return next((r for r in routes if r.method == method), None) or next(
        (r for r in routes if r.method == "ANY"), None
    )


def function_for_event(template: LocalTemplate, event: Any) -> str:
    """The logical id of the function the event is for, as the template wires it."""
    if _is_s3_event(event):
        targets = {
            notification.function_logical_id
            for bucket in template.buckets.values()
            for notification in bucket.notifications
        }
        if len(targets) == 1:
            return targets.pop()
        raise InvokeError(f"S3 events go to {sorted(targets) or 'no function'}: name the function")
    if isinstance(event, dict) and "resource" in event and "httpMethod" in event:
        route = _route_of(template, event)
        if route is None:
            raise InvokeError(f"no route {event['httpMethod']} {event['resource']} in the template")
        if _is_authorizer_event(event):
            if route.authorizer_logical_id is None:
                raise InvokeError(f"{event['httpMethod']} {event['resource']} has no authorizer")
            return str(route.authorizer_logical_id)
        return str(route.function_logical_id)
    raise InvokeError("cannot tell which function this event is for: name the function")


# ------------------------------------------------------------------ the event, made to fit


def prepare_event(stack: DevStack, logical_id: str, event: Any, project: str = DEFAULT_PROJECT) -> Any:
    """The event with what the local stack needs changed (a copy; the module docstring says what)."""
    event = copy.deepcopy(event)
    if _is_s3_event(event):
        for record in event["Records"]:
            _fit_s3_record(stack, logical_id, record)
    elif _is_authorizer_event(event):
        token = stack.token(project)
        for headers in (event.get("headers") or {}, event.get("multiValueHeaders") or {}):
            for name, value in headers.items():
                if value == PLACEHOLDER_TOKEN:
                    headers[name] = token
                elif isinstance(value, list):
                    headers[name] = [token if item == PLACEHOLDER_TOKEN else item for item in value]
    return event


def _fit_s3_record(stack: DevStack, logical_id: str, record: dict[str, Any]) -> None:
    assert stack.template is not None, "start() first"
    s3 = record.setdefault("s3", {})
    bucket = s3.setdefault("bucket", {})
    obj = s3.setdefault("object", {})
    local_buckets = {spec.name for spec in stack.template.buckets.values()}
    foreign = bucket.get("name") not in local_buckets
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
    """moto's object at the key, put there (a placeholder) if there was none; and whether it was put."""
    # Through moto's backend, not the S3 API: a PUT would notify the function, which would then run
    # twice (once for that notification, once for the event file that stands for it).
    from moto.s3.models import s3_backends

    backend = s3_backends[ACCOUNT_ID]["aws"]
    existing = backend.get_bucket(bucket).keys.get(key)
    if existing is not None:
        return existing, False
    log.info("put a placeholder object at s3://%s/%s", bucket, key)
    return backend.put_object(bucket, key, PLACEHOLDER_OBJECT, disable_notification=True), True


# ------------------------------------------------------------------ the call


def invoke_event(
    stack: DevStack, function: str | None, event: Any, project: str = DEFAULT_PROJECT
) -> tuple[str, Invocation]:
    """Run one function of the running stack with `event` (made to fit): its logical id and result."""
    assert stack.template is not None, "start() first"
    logical_id = function or function_for_event(stack.template, event)
    spec = stack.runner.spec(logical_id)
    if spec is None:
        known = ", ".join(sorted(stack.template.functions))
        raise InvokeError(f"no function {logical_id!r} in the template (functions: {known})")
    return spec.logical_id, stack.runner.invoke(spec, prepare_event(stack, spec.logical_id, event, project))


def read_event(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvokeError(f"cannot read the event file: {error}") from error
    except ValueError as error:
        raise InvokeError(f"{path} is not JSON: {error}") from error


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.invoke",
        description="Invoke one function of template.yaml with an event file, on a local stack "
        "in this process.",
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
    parser.add_argument("--log-level", default="WARNING", help="the local stack's own log lines (stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    payload_out = _stdout_for_the_payload_only()
    try:
        event = read_event(args.event)
        # A state dir of its own: the default one holds the token key of a `make run` going on.
        with tempfile.TemporaryDirectory(prefix="imagetasks-invoke-") as state_dir:
            stack = DevStack(
                args.template, api_port=0, aws_port=None, parameters={}, state_dir=Path(state_dir)
            ).start()
            logical_id, invocation = invoke_event(stack, args.function, event, args.project)
    except InvokeError as error:
        print(f"make invoke: {error}", file=sys.stderr)
        return 2
    payload_out.write(invocation.payload + "\n")
    payload_out.flush()
    if invocation.errored:
        print(f"{logical_id} errored (payload on stdout)", file=sys.stderr)
        return 1
    return 0


def _stdout_for_the_payload_only() -> Any:
    """Keep the real stdout for the payload; everything else written to fd 1 (Powertools' logger,
    print, child processes) goes to stderr, as `sam local invoke` separates them."""
    sys.stdout.flush()
    payload_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(payload_fd, "w", encoding="utf-8")


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The stack is not stopped: work the invocation started (a workflow execution, say) may still
    # run on daemon threads, and once moto's mock stopped their AWS calls would leave this machine.
    # Everything is in memory; ending the process ends it.
    os._exit(status)
