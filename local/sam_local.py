"""The built functions in Lambda-like containers: `sam local start-lambda` on podman (the container tier).

`make build` makes .aws-sam/build; `make containers` (local/containers.sh setup) the engine, the
Lambda python3.13 stand-in image and the network. `SamLocal` starts podman's Docker-compatible service
with the environment every container gets, and `sam local start-lambda` on a free loopback port, and
invokes functions by logical id through Lambda's Invoke API, with `http.client`: the local stack runs
inside moto's `mock_aws`, which intercepts boto3 and requests.

Networking (measured with podman 4.3 and netavark 1.4): containers sit on `imagetasks-internal`, a
bridge without DNS whose egress a raw-table rule drops: they reach each other and the host's address
on the bridge, nothing else (not the host's other addresses, not its nameserver). Podman's
`--internal` networks cannot serve: their bridge has no host address and no port forwarding, and SAM
calls the emulator in each container through a port published on 127.0.0.1. A server for the
containers must listen on the bridge's gateway address (10.89.0.1 here; podman also writes it as
`host.containers.internal` into the containers' /etc/hosts): 127.0.0.1 is out of their reach, and
0.0.0.0 would also expose it on the machine's other interfaces. That address exists only while the
bridge does, that is while a container is attached: `host_address()` keeps an idle anchor container
running for that. Inside a `sam local` container, AWS_LAMBDA_FUNCTION_NAME is the function's logical
id (e.g. `TasksApiFunction`), not a physical name: the credentials server is asked for
`<IMAGETASKS_CREDENTIALS_URL>/<logical id>`.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

from local import sam_images

ROOT = Path(__file__).resolve().parent.parent
CONTAINERS_SCRIPT = ROOT / "local" / "containers.sh"
SAM = ROOT / ".venv-sam" / "bin" / "sam"
BUILT_TEMPLATE = ROOT / ".aws-sam" / "build" / "template.yaml"
NETWORK = "imagetasks-internal"
LAMBDA_IMAGE = "public.ecr.aws/lambda/python:3.13-x86_64"
STATE_DIR = Path(os.environ.get("IMAGETASKS_CONTAINERS_STATE", "/var/lib/imagetasks-containers"))
BASE_CONF = STATE_DIR / "containers.conf"  # written by containers.sh setup: runc, rlimits
SAM_CREDENTIALS = ("sam-local-shared", "sam-local-shared-secret")  # what SAM hands every container
SESSION_VARIABLE = "IMAGETASKS_SAM_SESSION"  # in every container of one SamLocal: how stop() finds them


class ContainerTierError(RuntimeError):
    """The container tier is not set up or did not start."""


def _run(
    command: list[str], env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


def _script(*args: str, env: Mapping[str, str] | None = None) -> str:
    result = _run([str(CONTAINERS_SCRIPT), *args], env or {})
    if result.returncode != 0:
        raise ContainerTierError(f"containers.sh {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return _run(["podman", *args], {"CONTAINERS_CONF": str(BASE_CONF)}, timeout)


#: podman for a build: copying the dependencies layer takes 20 to 40 s on two busy cores.
_podman_slow = functools.partial(_podman, timeout=600)


def missing_prerequisites() -> str | None:
    """Why the container tier cannot run here, or None when it can."""
    if not BUILT_TEMPLATE.is_file():
        return f"no {BUILT_TEMPLATE.relative_to(ROOT)}: run `make build`"
    if not SAM.is_file():
        return f"no {SAM.relative_to(ROOT)}: run `make install`"
    try:
        image = _podman("image", "exists", LAMBDA_IMAGE)
    except FileNotFoundError:
        return "no podman: run `make containers` (as root)"
    if image.returncode != 0 or not BASE_CONF.is_file():
        return f"no {LAMBDA_IMAGE} stand-in image: run `make containers` (as root)"
    if os.geteuid() != 0:
        return "the container tier runs as root (podman's service and the network's egress rule)"
    return None


def prepare_layer_images() -> None:
    """Build the layer images `SamLocal.start` will need, if missing (sam_images.py): a stack starting
    in containers calls it first, in the background, while it sets up everything else."""
    sam_images.layer_images(BUILT_TEMPLATE, LAMBDA_IMAGE, _podman_slow)


def host_address() -> str:
    """The host's address on the containers' network, where servers for the containers must listen;
    brings the network's bridge up first (the address exists only while the bridge does)."""
    address = _script("up").strip()
    if not address:
        raise ContainerTierError(f"podman network {NETWORK} has no gateway address")
    return address


#: The keys of the document the Python runtime (awslambdaric) reports an unhandled exception with.
RUNTIME_ERROR_KEYS = frozenset({"errorMessage", "errorType", "requestId", "stackTrace", "cause"})


def is_runtime_error(payload: str) -> bool:
    """Whether a payload is the runtime's report of an unhandled exception.

    Lambda learns of the error out of band (the runtime posts it to `/invocation/<id>/error`) and sets
    FunctionError, which Step Functions turns into a failed task. SAM's RIE passes only the body on,
    and SAM guesses from the keys; awslambdaric (4.2 in the stand-in) adds `requestId`, which SAM's
    guess misses, so a failed step would reach the workflow as a success carrying the error document.
    """
    try:
        document = json.loads(payload)
    except ValueError:
        return False
    return (
        isinstance(document, dict)
        and {"errorMessage", "errorType"} <= document.keys()
        and document.keys() <= RUNTIME_ERROR_KEYS
    )


class SamLocal:
    """`sam local start-lambda` over the built template, its containers on the egress-less network.

    `env_vars` is SAM's `--env-vars` document, `{LogicalId: {VAR: value}}` (SAM only overrides
    variables the template declares); `container_env` reaches every container through podman (e.g.
    AWS_ENDPOINT_URL, IMAGETASKS_CREDENTIALS_URL, LOCAL_TOKEN_KEY); SAM hands every container
    `SAM_CREDENTIALS` (the stand-in image replaces them when IMAGETASKS_CREDENTIALS_URL is set).
    """

    def __init__(
        self,
        *,
        env_vars: Mapping[str, Mapping[str, str]] | None = None,
        parameter_overrides: Mapping[str, str] | None = None,
        container_env: Mapping[str, str] | None = None,
        region: str = "us-east-1",
        startup_timeout: float = 60.0,
        warm_containers: str = "LAZY",
    ) -> None:
        self.env_vars = {key: dict(value) for key, value in (env_vars or {}).items()}
        self.parameter_overrides = dict(parameter_overrides or {})
        self.session = uuid.uuid4().hex[:12]
        self.container_env = {**(container_env or {}), SESSION_VARIABLE: self.session}
        self.region = region
        self.startup_timeout = startup_timeout
        self.warm_containers = warm_containers  # EAGER: every function's container at start, in parallel
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._engine_env: dict[str, str] = {}  # where containers.sh start puts the engine's socket
        self._process: subprocess.Popen[bytes] | None = None
        self._sam_env: dict[str, str] = {}  # SAM's: the engine's socket, the credentials for every container
        self._options: list[str] = []  # what start-lambda and invoke share: template, images, network...

    def settings(self) -> dict[str, Any]:
        """What another SamLocal needs to run these functions the same way (`SamLocal(**settings)`):
        the variables, parameters and region, not this one's session."""
        return {
            "env_vars": self.env_vars,
            "parameter_overrides": self.parameter_overrides,
            "container_env": {k: v for k, v in self.container_env.items() if k != SESSION_VARIABLE},
            "region": self.region,
        }

    # ------------------------------------------------------------ lifecycle

    def start(self, *, start_lambda: bool = True) -> Self:
        """The engine service, the layer images and (unless `start_lambda` is false: `invoke_once`
        only) `sam local start-lambda`, answering."""
        if reason := missing_prerequisites():
            raise ContainerTierError(reason)
        self._dir = tempfile.TemporaryDirectory(prefix="imagetasks-sam-")
        state = Path(self._dir.name)
        self._engine_env = {"IMAGETASKS_PODMAN_SOCK": str(state / "podman.sock")}
        try:
            assignments = [f"{key}={value}" for key, value in self.container_env.items()]
            output = _script("start", *assignments, env=self._engine_env)
            docker_host = next(line for line in output.splitlines() if line.startswith("DOCKER_HOST="))
            self._sam_env = {
                **{key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "PYTHON"))},
                "DOCKER_HOST": docker_host.partition("=")[2],
                "SAM_CLI_TELEMETRY": "0",
                "SAM_CLI_CONTEXT_CONTAINER_ENGINE": "docker",
                "AWS_ACCESS_KEY_ID": SAM_CREDENTIALS[0],
                "AWS_SECRET_ACCESS_KEY": SAM_CREDENTIALS[1],
                "AWS_DEFAULT_REGION": self.region,
            }
            env_file = state / "env-vars.json"
            env_file.write_text(json.dumps(self.env_vars), encoding="utf-8")
            try:  # the layers in images built once, not by sam local at every start (sam_images.py)
                template_options = sam_images.prepare(BUILT_TEMPLATE, LAMBDA_IMAGE, state, _podman_slow)
            except sam_images.LayerImageError as error:
                raise ContainerTierError(str(error)) from error
            self._options = [
                *template_options,
                "--skip-pull-image",
                "--docker-network", NETWORK,
                "--container-host-interface", "127.0.0.1",
                "--env-vars", str(env_file),
                "--region", self.region,
            ]  # fmt: skip
            if self.parameter_overrides:
                overrides = " ".join(f'{key}="{value}"' for key, value in self.parameter_overrides.items())
                self._options += ["--parameter-overrides", overrides]
            if start_lambda:
                self._start_lambda(state)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_lambda(self, state: Path) -> None:
        """`sam local start-lambda` on a free loopback port (its output in `state`), once it answers."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        command = [
            str(SAM), "local", "start-lambda", *self._options,
            "--warm-containers", self.warm_containers,
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip
        with (state / "sam.log").open("wb") as log:
            self._process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self._sam_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ContainerTierError(f"sam local start-lambda exited:\n{self.log()[-4000:]}")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                connection.request("GET", "/")
                connection.getresponse().read()
                return
            except OSError:
                time.sleep(0.2)
            finally:
                connection.close()
        raise ContainerTierError(f"sam local start-lambda did not answer in {self.startup_timeout} s")

    def stop(self) -> None:
        """SIGTERM to SAM (then SIGKILL), remove this session's containers, stop the engine service."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
        if self._dir is None:
            return
        ids = _podman("ps", "-aq", "--filter", "label=sam.cli.container.type=lambda").stdout.split()
        inspected = json.loads(_podman("container", "inspect", *ids).stdout or "[]") if ids else []
        mine = [
            container["Id"]
            for container in inspected
            if f"{SESSION_VARIABLE}={self.session}" in (container.get("Config", {}).get("Env") or [])
        ]
        if mine:
            _podman("rm", "-f", "-t", "0", *mine)
        with contextlib.suppress(ContainerTierError):
            _script("stop", env=self._engine_env)
        self._dir.cleanup()
        self._dir = None

    # ------------------------------------------------------------ use

    def log(self) -> str:
        """What `sam local start-lambda` wrote so far ("" before it starts, after it stops)."""
        path = Path(self._dir.name) / "sam.log" if self._dir is not None else None
        if path is None or not path.exists():
            return ""
        return path.read_text(encoding="utf-8", errors="replace")

    def invoke(self, function_logical_id: str, event: Any, timeout: float = 120.0) -> tuple[str, bool, str]:
        """Invoke a function of the built template: (payload JSON text, errored, log lines of the call).

        errored: the response carries X-Amz-Function-Error, or its status is not a success, or its body
        is empty, or it is the runtime's error document (`is_runtime_error`). SAM answers 200 with an
        empty body when the runtime exits before it answers (the emulator's Sandbox.Failure; Lambda
        would say Unhandled, Runtime.ExitError): a handler that returns None still answers `null`.
        """
        if self._process is None:  # not started, or stopped meanwhile
            raise ContainerTierError("not started")
        offset = len(self.log().encode("utf-8"))
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(
                "POST",
                f"/2015-03-31/functions/{function_logical_id}/invocations",
                body=json.dumps(event).encode("utf-8"),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            payload = response.read().decode("utf-8", errors="replace")
            errored = (
                bool(response.getheader("X-Amz-Function-Error"))
                or not 200 <= response.status < 300
                or not payload.strip()
                or is_runtime_error(payload)
            )
        finally:
            connection.close()
        # The call's log lines, waiting briefly (1 s at most) for its last ones.
        logs = _poll(
            lambda: self.log().encode("utf-8")[offset:].decode("utf-8", errors="replace"),
            lambda text: "REPORT RequestId" in text or "END RequestId" in text,
            1.0,
            0.05,
        )
        return payload, errored, logs

    def invoke_once(
        self, function_logical_id: str, event: Any, timeout: float = 600.0
    ) -> tuple[str, bool, str]:
        """`sam local invoke` of one function with `event`, in a container of its own (gone after it):
        (payload, errored, SAM's and the function's log lines). Needs `start(start_lambda=False)`.
        errored as for `invoke`: SAM failed, no payload, or the runtime's error document."""
        assert self._dir is not None, "start(start_lambda=False) first"
        event_file = Path(self._dir.name) / f"event-{uuid.uuid4().hex[:8]}.json"
        event_file.write_text(json.dumps(event), encoding="utf-8")
        completed = subprocess.run(
            self.invoke_command(function_logical_id, event_file),
            cwd=ROOT,
            env=self._sam_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        payload = completed.stdout.strip()
        errored = completed.returncode != 0 or not payload or is_runtime_error(payload)
        return payload, errored, completed.stderr

    def invoke_command(self, function_logical_id: str, event_file: Path) -> list[str]:
        """The `sam local invoke` command line `invoke_once` runs (DOCKER_HOST in its environment):
        the options start-lambda gets."""
        return [str(SAM), "local", "invoke", *self._options, "--event", str(event_file), function_logical_id]

    def wait_for_log(self, *needles: str, timeout: float = 30.0) -> str:
        """The log once it holds every needle, or as it is when `timeout` runs out: sam local writes a
        container's output as it arrives, after the invoke has answered."""
        return _poll(self.log, lambda text: all(needle in text for needle in needles), timeout, 0.1)


def _poll(read: Callable[[], str], done: Callable[[str], bool], timeout: float, interval: float) -> str:
    """What `read` returns once `done` holds for it, or when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while not done(text := read()) and time.monotonic() <= deadline:
        time.sleep(interval)
    return text
