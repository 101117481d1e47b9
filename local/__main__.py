"""`python -m local` (what `make run` runs): the whole application on this machine, until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from local.sam_local import missing_prerequisites
from local.stack import DEFAULT_STATE_DIR, DEFAULT_TEMPLATE, DevStack
from local.template import REGION

DEMO_MEMBER_PROJECT = "demo-project"
DEMO_ADMIN_PROJECT = "admin-project"
LOOPBACK = "127.0.0.1"


def _parameter(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected Key=Value, got {text!r}")
    return name, value


def _banner(stack: DevStack) -> str:
    buckets = stack.bucket_names()
    uploads = buckets.get("UploadsBucket") or next(iter(buckets.values()), "<bucket>")
    member = stack.token(DEMO_MEMBER_PROJECT, ["member"])
    admin = stack.token(DEMO_ADMIN_PROJECT, ["member", "admin"])
    aws = stack.aws_url or "(not started: --aws-port none)"
    glance = f"glance --os-image-api-version 2 --os-image-url {stack.api_url} --os-auth-token $TOKEN"
    # Import sources must be where the functions can reach them: loopback in-process, the host's
    # address on the containers' network with --containers (the AWS endpoint's address then).
    source_host = LOOPBACK
    functions = "in this process, from the source tree"
    if stack.containers:
        functions = "the built artifact (.aws-sam/build) in containers, via sam local"
        source_host = (urlsplit(stack.aws_url).hostname if stack.aws_url else None) or LOOPBACK
    lines = [
        "",
        "imagetasks is running locally (moto; no AWS account, no Docker).",
        f"  functions:    {functions}",
        f"  API:          {stack.api_url}",
        f"  console:      {stack.api_url}/console (sign in with a token below)",
        f"  AWS endpoint: {aws}",
        "  buckets:      " + ", ".join(f"{logical_id}={name}" for logical_id, name in buckets.items()),
        "",
        f"Tokens (valid 24 h; signing key in {stack.state_dir / 'token.key'}):",
        f"  export TOKEN={member}",
        f"  export ADMIN_TOKEN={admin}",
        f"  (member of {DEMO_MEMBER_PROJECT}; admin of {DEMO_ADMIN_PROJECT})",
        "  more: make -s token PROJECT=P ROLES=member,admin",
        "",
        "Try:",
        f"  curl -s {stack.api_url}/versions",
        f'  curl -s -H "X-Auth-Token: $TOKEN" {stack.api_url}/v2/tasks',
        f"  {glance} task-list",
        "  # an image to import, served over http on this machine (port 8000 is allowed locally):",
        "  qemu-img create -f qcow2 disk.qcow2 64M",
        f"  python3 -m http.server 8000 --bind {source_host} &",
        f"  {glance} task-create \\",
        f'      --type import --input \'{{"import_from": "http://{source_host}:8000/disk.qcow2", '
        '"import_from_format": "qcow2", "image_properties": {"name": "demo", '
        '"disk_format": "qcow2", "container_format": "bare"}}\'',
    ]
    if stack.aws_url:
        lines += [
            "  # the AWS CLI: the operator's access key is `testing`; the stack's region is " + REGION,
            f"  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION={REGION}",
            f"  aws --endpoint-url {stack.aws_url} s3 cp disk.qcow2 s3://{uploads}/uploads/{DEMO_MEMBER_PROJECT}/disk.qcow2",
            f"  aws --endpoint-url {stack.aws_url} dynamodb scan --table-name "
            + next(iter(stack.table_names().values()), "<table>"),
        ]
    lines += ["", "Ctrl-C stops it (everything is in memory and is gone then).", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description="Run imagetasks locally on moto.")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--host", default="127.0.0.1", help="address both endpoints listen on")
    parser.add_argument("--api-port", type=int, default=3000)
    parser.add_argument(
        "--aws-port", default="5000", help="moto's AWS endpoint; 'none' to run without it (0: any free port)"
    )
    parser.add_argument(
        "--param",
        type=_parameter,
        action="append",
        default=[],
        metavar="Key=Value",
        help="template parameter override (repeatable), e.g. --param TaskTimeToLiveHours=1",
    )
    parser.add_argument(
        "--containers",
        action="store_true",
        help="run every function from the built artifact (`make build`) in Lambda-like containers "
        "(`make containers`, root) instead of in this process",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where the stack writes its signing key (and, with --containers, SAM's settings)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server access lines

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stopping.set())

    aws_port = None if args.aws_port.lower() == "none" else int(args.aws_port)
    if args.containers and (reason := missing_prerequisites()):
        print(f"cannot start in containers: {reason}", file=sys.stderr)
        return 1
    stack = DevStack(
        args.template,
        host=args.host,
        api_port=args.api_port,
        aws_port=aws_port,
        parameters=dict(args.param),
        state_dir=args.state_dir,
        containers=args.containers,
    )
    try:
        stack.start()
    except OSError as error:
        print(
            f"cannot start: {error} (is another `make run` using the port? try --api-port/--aws-port)",
            file=sys.stderr,
        )
        return 1
    try:
        print(_banner(stack), flush=True)
        stopping.wait()
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
