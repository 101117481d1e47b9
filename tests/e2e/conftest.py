"""The local stack as a session fixture: the whole application, started once, on free ports.

    def test_something(local_stack):
        token = local_stack.token("demo-project")                     # roles=("member",) by default
        requests.get(f"{local_stack.api_url}/v2/tasks", headers={"X-Auth-Token": token})
        local_stack.client("dynamodb").scan(TableName=local_stack.tables["TasksTable"])

End-to-end tests run after every other test of the session: the stack owns the process's moto
(`mock_aws` started once, never reset while serving), and the integration tier's own `mock_aws()`
blocks would otherwise share — and collide with — its tables and buckets.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from local.provision import client_cache
from local.stack import DEFAULT_TEMPLATE, DevStack
from local.template import REGION


@dataclass
class DevStackHandle:
    """What an end-to-end test needs from the running stack."""

    stack: DevStack
    api_url: str  # e.g. http://127.0.0.1:41234 — paths at the root: /versions, /v2/tasks, ...
    aws_url: str  # moto's server, same state as the handlers: boto3/aws CLI endpoint_url
    buckets: dict[str, str] = field(default_factory=dict)  # logical id → bucket name
    tables: dict[str, str] = field(default_factory=dict)  # logical id → table name
    functions: dict[str, str] = field(default_factory=dict)  # logical id → function name
    state_machines: dict[str, str] = field(default_factory=dict)  # logical id → ARN

    def token(self, project_id: str, roles: Sequence[str] = ("member",), user_id: str | None = None) -> str:
        """An X-Auth-Token for `user_id` (default `<project>-user`) in `project_id` with `roles`."""
        return self.stack.token(project_id, roles, user_id)

    def headers(self, project_id: str = "demo-project", roles: Sequence[str] = ("member",)) -> dict[str, str]:
        return {"X-Auth-Token": self.token(project_id, roles), "Accept": "application/json"}

    def __post_init__(self) -> None:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        #: client(service): a boto3 client that talks to the stack over HTTP, like an outside tool would
        self.client = client_cache(functools.partial(session.client, endpoint_url=self.aws_url))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)  # stable: order kept within tiers


#: IMAGETASKS_CONTAINERS=1: every Lambda invocation of the stack goes to the built artifact in a
#: container (`make test` runs the tests marked `artifact` that way, after the in-process run).
CONTAINERS = os.environ.get("IMAGETASKS_CONTAINERS") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "artifact: also run on the built functions in containers (IMAGETASKS_CONTAINERS=1)"
    )


@pytest.fixture(autouse=True)
def _only_artifact_tests_in_containers(request: pytest.FixtureRequest) -> None:
    if CONTAINERS and request.node.get_closest_marker("artifact") is None:
        pytest.skip("in-process only (not marked artifact)")


def image_server_host() -> str:
    """Loopback; in container mode the host's address on the containers' network (their only way out)."""
    if not CONTAINERS:
        return "127.0.0.1"
    from local.sam_local import host_address

    return host_address()


@dataclass
class ImageServer:
    """A plain HTTP server serving files the tests put in `root` (see `image_server_host`)."""

    root: Path
    port: int
    host: str = "127.0.0.1"

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def hold(self, name: str) -> tuple[threading.Event, threading.Event]:
        """Requests for `name` wait for the second event; the first is set when one arrives."""
        gate = (threading.Event(), threading.Event())
        QuietHandler.gates[name] = gate
        return gate

    def trickle(self, name: str) -> tuple[threading.Event, threading.Event]:
        """`name` answers 200 (1 GiB announced) and then trickles 1 KiB every 0.2 s, for two
        minutes at most; the first event is set when a request arrives, the second once its client
        closed the connection."""
        events = (threading.Event(), threading.Event())
        QuietHandler.trickles[name] = events
        return events

    def stepped(self, name: str, size: int, hold_at: int) -> threading.Event:
        """`name` answers `size` zero bytes (its length announced): the data up to `hold_at` at
        once, then 64 KiB every half second until the returned event is set (60 s at most), then
        the rest. The import's progress is written every 5 s while data arrives, so a held task
        shows a percentage just past `hold_at` while it waits."""
        release = threading.Event()
        QuietHandler.stepped[name] = (size, hold_at, release)
        return release


@pytest.fixture(scope="session")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    root = tmp_path_factory.mktemp("image-server")
    handler = functools.partial(QuietHandler, directory=str(root))
    host = image_server_host()
    server = ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ImageServer(root=root, port=server.server_address[1], host=host)
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    #: file name → (set when it is requested, wait for this before answering): a step held mid-fetch
    gates: dict[str, tuple[threading.Event, threading.Event]] = {}
    #: file name → where a request for it is redirected (302)
    redirects: dict[str, str] = {}
    #: file name → (set when it is requested, set when its client went away): a trickling source
    trickles: dict[str, tuple[threading.Event, threading.Event]] = {}
    #: file name → (size, bytes sent before waiting, set to send the rest): a source paused mid-way
    stepped: dict[str, tuple[int, int, threading.Event]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        trickle = self.trickles.get(self.path.lstrip("/"))
        if trickle is not None:
            self._trickle(*trickle)
            return
        stepped = self.stepped.get(self.path.lstrip("/"))
        if stepped is not None:
            self._stepped(*stepped)
            return
        gate = self.gates.get(self.path.lstrip("/"))
        if gate is not None:
            gate[0].set()
            gate[1].wait(60)
        location = self.redirects.get(self.path.lstrip("/"))
        if location is not None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def _stepped(self, size: int, hold_at: int, release: threading.Event) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        sent = 0

        def send_until(limit: int) -> None:
            nonlocal sent
            while sent < limit:
                part = min(1024 * 1024, limit - sent)
                self.wfile.write(b"\0" * part)
                sent += part
            self.wfile.flush()

        try:
            send_until(hold_at)
            deadline = time.monotonic() + 60
            while not release.wait(0.5) and time.monotonic() < deadline and sent < size - 1024 * 1024:
                send_until(sent + 64 * 1024)
            send_until(size)
        except OSError:
            pass  # the import went away (cancelled)
        self.close_connection = True

    def _trickle(self, requested: threading.Event, gone: threading.Event) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(1024**3))
        self.end_headers()
        requested.set()
        try:
            for _ in range(600):
                self.wfile.write(b"\0" * 1024)  # raises once the client cut the connection
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            gone.set()
        self.close_connection = True


# The stack for the tests: two processing slots (so the concurrency test can fill them), a short
# step timeout (so a test can pass it), Lambda's smallest working space (so a convert of a few
# hundred MiB of virtual disk goes to the container runner), and the
# image server's port allowed by the import filter (loopback is allowed locally, ports are not).
#: StepTimeoutSeconds: short enough for the timeout test, long enough that a step of a small image
#: on a loaded 2-core machine is never stopped (at 15 s two imports were, under load 9).
TEST_PARAMETERS = {"MaxConcurrentTasks": "2", "StepTimeoutSeconds": "40", "EphemeralStorageMiB": "512"}


@pytest.fixture(scope="session")
def local_stack(
    tmp_path_factory: pytest.TempPathFactory, image_server: ImageServer
) -> Iterator[DevStackHandle]:
    if CONTAINERS:
        from local.sam_local import missing_prerequisites
        from tests.build.conftest import require

        reason = missing_prerequisites()
        require(reason is None, f"container tier not set up: {reason}")
    # IMAGETASKS_TEMPLATE lets a developer try the suite on a variant of the template.
    template = Path(os.environ.get("IMAGETASKS_TEMPLATE", DEFAULT_TEMPLATE))
    stack = DevStack(
        template,
        api_port=0,
        aws_port=0,
        parameters={**TEST_PARAMETERS, "ImportAllowedPorts": f"80,443,{image_server.port}"},
        state_dir=tmp_path_factory.mktemp("local-state"),
        ttl_sweep_seconds=0.5,
        execution_poll_seconds=0.2,
        containers=CONTAINERS,
    )
    stack.start()
    try:
        assert stack.template is not None and stack.aws_url is not None
        yield DevStackHandle(
            stack=stack,
            api_url=stack.api_url,
            aws_url=stack.aws_url,
            buckets=stack.bucket_names(),
            tables=stack.table_names(),
            functions={logical_id: spec.name for logical_id, spec in stack.template.functions.items()},
            state_machines={
                logical_id: spec.arn for logical_id, spec in stack.template.state_machines.items()
            },
        )
    finally:
        stack.stop()
