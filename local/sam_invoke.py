"""`python -m local.sam_invoke [FUNCTION] EVENT` (what `make sam-invoke` runs): one function of the
built artifact with an event file, through SAM's own `sam local invoke`, in a Lambda-like container.

`sam local invoke -t .aws-sam/build/template.yaml -e EVENT FUNCTION` alone runs the function, but
with nothing to talk to: SAM leaves the template's resource names unresolved (a table's name is its
logical id, so the API answers 409 or 500), the authorizer has no signing key for local tokens (it
refuses every token), S3 events name a bucket of a deployed stack, and the AWS calls go to AWS. So
this does what `make invoke` does (local/invoke.py), then hands the call to SAM:

1. a fresh local stack in this process (every resource of the template, in memory), its AWS
   endpoint on the host's address on the containers' network (the only address a container
   reaches), gone when the command ends;
2. the event made to fit that stack, as `make invoke` makes it (`invoke.fit_event`: placeholders,
   an S3 event's bucket and object);
3. SAM's variables generated from that stack, as container mode does (`DevStack.container_runner`):
   `--env-vars` with every function's environment as the stack resolved it (table and bucket names,
   the state machine's ARN, the local parameters), and for every container the endpoint, the
   authorizer's signing key and a credentials server that hands each function its own role's keys;
4. `sam local invoke` on the containers' network (`SamLocal.invoke_once`; the command is printed).

The payload goes to stdout, everything else to stderr; the exit status is 1 when the function
errored, 2 when the event or the function cannot be used or the container tier is not set up.
What the function starts (a workflow execution, say) runs on the in-process stack, as with
`make invoke`.

With `--running`, against a `make run ARGS=--containers` going on instead: that stack writes SAM's
settings for its functions to `local/.state/sam-local.json` (its endpoint, credentials server and
signing key among them) while it runs, and `sam local invoke` runs with those, so what the function
does lands in that stack. Its event is sent as it is, but for the authorizer's token placeholder
(a token signed with that stack's key): an event with other placeholders (made only on a fresh
stack) or naming a bucket the stack does not have is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from local.container_runner import INVOKE_GRACE_SECONDS
from local.invoke import (
    DEFAULT_PROJECT,
    PLACEHOLDER,
    PLACEHOLDER_TOKEN,
    InvokeError,
    _stdout_for_the_payload_only,
    fit_event,
    function_for_event,
    log_to_stderr,
    put_token,
    read_event,
    serve_sample_image,
)
from local.lambda_runtime import Invocation
from local.sam_local import ContainerTierError, SamLocal, host_address, missing_prerequisites
from local.stack import DEFAULT_STATE_DIR, DEFAULT_TEMPLATE, SAM_LOCAL_STATE, DevStack
from local.template import LOCAL_PARAMETER_OVERRIDES, FunctionSpec, load_template
from local.tokens import mint_local_token


def sam_invoke(
    event: object,
    function: str | None = None,
    *,
    template: Path = DEFAULT_TEMPLATE,
    project: str = DEFAULT_PROJECT,
    state_dir: Path,
) -> tuple[str, Invocation]:
    """(logical id, the invocation) of one function with `event`."""
    reason = missing_prerequisites()
    if reason:
        raise ContainerTierError(reason)
    address = host_address()
    # The sample image where both the stack and the container reach it.
    image_url, port = serve_sample_image(address)
    stack = DevStack(
        template,
        api_port=0,
        aws_port=0,
        aws_host=address,
        parameters={
            "ImportAllowedPorts": f"{LOCAL_PARAMETER_OVERRIDES['ImportAllowedPorts']},{port}",
            "ImportAllowPrivate": "true",  # the host's address on the containers' network is private
        },
        state_dir=state_dir,
    ).start()
    spec, prepared = fit_event(stack, function, event, project, image_url)
    runner = stack.container_runner(address).start(start_lambda=False)
    try:
        return _invoke_once(runner.sam, spec, prepared)
    finally:
        runner.stop()


def sam_invoke_running(
    event: object,
    function: str | None = None,
    *,
    template: Path = DEFAULT_TEMPLATE,
    project: str = DEFAULT_PROJECT,
    state_dir: Path = DEFAULT_STATE_DIR,
) -> tuple[str, Invocation]:
    """As `sam_invoke`, against the `make run ARGS=--containers` whose state is in `state_dir`."""
    reason = missing_prerequisites()
    if reason:
        raise ContainerTierError(reason)
    path = state_dir / SAM_LOCAL_STATE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(settings["pid"]), 0)
    except (OSError, ValueError, KeyError) as error:
        raise ContainerTierError(
            f"no `make run ARGS=--containers` running here ({path}: {error}); leave out --running "
            "for a stack of this command's own"
        ) from error
    stack = load_template(template, settings["parameter_overrides"])
    logical_id = function or function_for_event(stack, event)
    spec = stack.functions.get(logical_id)
    if spec is None:
        raise InvokeError(
            f"no function {logical_id!r} in the template (functions: {', '.join(stack.functions)})"
        )
    event = json.loads(json.dumps(event))  # a copy
    if isinstance(event, dict):  # an authorizer event's token placeholder: signed with that stack's key
        key = (state_dir / "token.key").read_text(encoding="utf-8").strip()
        put_token(event, mint_local_token(key, project, f"{project}-user", ["member"]))
    left = sorted(set(PLACEHOLDER.findall(json.dumps(event))) - {PLACEHOLDER_TOKEN})
    if left:
        raise InvokeError(
            f"the event holds {', '.join(left)}, which only a fresh stack makes: leave out --running"
        )
    buckets = {bucket.name for bucket in stack.buckets.values()}
    for record in (event.get("Records") or []) if isinstance(event, dict) else []:
        named = (((record or {}).get("s3") or {}).get("bucket") or {}).get("name")
        if named is not None and named not in buckets:
            raise InvokeError(
                f"the event names bucket {named!r}; the running stack's are {', '.join(sorted(buckets))}"
            )
    sam = SamLocal.from_settings(settings).start(start_lambda=False)
    try:
        return _invoke_once(sam, spec, event)
    finally:
        sam.stop()


def _invoke_once(sam: SamLocal, spec: FunctionSpec, event: object) -> tuple[str, Invocation]:
    """(logical id, the invocation) of `sam local invoke` of the function, its command on stderr first."""
    command = shlex.join(sam.invoke_command(spec.logical_id, Path("<event>")))
    print(f"sam-invoke: {command}", file=sys.stderr, flush=True)
    payload, errored, logs = sam.invoke_once(
        spec.logical_id, event, timeout=spec.timeout_seconds + INVOKE_GRACE_SECONDS
    )
    return spec.logical_id, Invocation(payload=payload, errored=errored, logs=logs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.sam_invoke",
        description="Invoke one built function with an event file through `sam local invoke`, in a "
        "container, against a local stack in this process.",
    )
    parser.add_argument("function", nargs="?", help="logical id; default: from the event")
    parser.add_argument("event", type=Path, help="event file, e.g. events/tasks_api_list.json")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--project", default=DEFAULT_PROJECT, help="project of the token an event gets")
    parser.add_argument(
        "--running",
        action="store_true",
        help="against the `make run ARGS=--containers` going on, not a stack of this command's own",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="with --running: the stack's state"
    )
    parser.add_argument("--log-level", default="WARNING", help="the local stack's own log lines (stderr)")
    args = parser.parse_args(argv)
    log_to_stderr(args.log_level)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server: a line per AWS call
    payload_out = _stdout_for_the_payload_only()
    try:
        event = read_event(args.event)
        # Without --running, a state dir of its own: the default one holds the token key of a `make
        # run` going on.
        with (
            contextlib.nullcontext(str(args.state_dir))
            if args.running
            else tempfile.TemporaryDirectory(prefix="imagetasks-sam-invoke-")
        ) as state_dir:
            logical_id, invocation = (sam_invoke_running if args.running else sam_invoke)(
                event, args.function, template=args.template, project=args.project, state_dir=Path(state_dir)
            )
    except (InvokeError, ContainerTierError) as error:
        print(f"make sam-invoke: {error}", file=sys.stderr)
        return 2
    sys.stderr.write(invocation.logs)
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
    # As local/invoke.py: the stack is not stopped (what the call started may still run on daemon
    # threads); ending the process ends it.
    os._exit(status)
