"""Run every Lambda invocation of the local stack on the built artifact, in Lambda-like containers.

`DevStack(containers=True)` (`make run ARGS=--containers`) swaps the in-process `HandlerRunner` for
a `ContainerRunner`: the API front, moto's Lambda hook (Step Functions tasks, S3 notifications) and the
emulated EventBridge rules then invoke `.aws-sam/build` through `sam local start-lambda` (local/
sam_local.py) instead of importing handlers from the source tree. What a container needs from the
host is on the host's address on the containers' network (a container reaches nothing else): moto's
server (AWS_ENDPOINT_URL: the stack binds it there in this mode); its function's role credentials,
which `CredentialsServer` answers `GET /<logical id>` with (the stand-in image's bootstrap fetches
them and refuses to start without them), so moto enforces each function's own IAM policies as
in-process; and, through SAM's `--env-vars`, each function's variables as the local template
resolved them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.lambda_runtime import FunctionDirectory, Invocation
from local.sam_local import SamLocal
from local.template import REGION, FunctionSpec

log = logging.getLogger("local.containers")

#: Seconds granted beyond a function's own timeout before the runner stops waiting for SAM's answer.
INVOKE_GRACE_SECONDS = 60


class CredentialsServer:
    """`GET /<logical id>` → that function's role credentials as STS returns them; 404 otherwise."""

    def __init__(self, address: str, credentials: Mapping[str, Mapping[str, str]]) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.strip("/")
                requests.append(name)
                found = credentials.get(name)
                body = json.dumps(found if found is not None else {"message": "no such function"}).encode()
                self.send_response(200 if found is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, name="credentials", daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class ContainerRunner(FunctionDirectory):
    """Same interface as `HandlerRunner` (`functions`, `spec`, `invoke`); the call goes to a container."""

    def __init__(
        self,
        functions: Iterable[FunctionSpec],
        *,
        address: str,
        aws_url: str,
        credentials: Mapping[str, Mapping[str, str]],
        container_env: Mapping[str, str],
        parameter_overrides: Mapping[str, str],
    ) -> None:
        super().__init__(functions)
        self.invocations: Counter[str] = Counter()  # logical id → calls sent to its container
        self._count_lock = threading.Lock()
        self.credentials_server = CredentialsServer(address, credentials)
        self.sam = SamLocal(
            env_vars={logical_id: spec.environment for logical_id, spec in self.functions.items()},
            parameter_overrides=parameter_overrides,
            container_env={
                **container_env,
                "AWS_ENDPOINT_URL": aws_url,
                "IMAGETASKS_CREDENTIALS_URL": self.credentials_server.url,
                "POWERTOOLS_TRACE_DISABLED": "true",
            },
            region=REGION,
            # Every function's container starts with the stack, in parallel: no invocation waits
            # for a cold container (about 10 s each here, one after the other otherwise).
            warm_containers="EAGER",
            startup_timeout=300,
        )

    def start(self, *, start_lambda: bool = True) -> ContainerRunner:
        """Start SAM: `start-lambda` for `invoke`, or (`start_lambda` false) only what
        `SamLocal.invoke_once` needs. The credentials server serves from the runner's making."""
        try:
            self.sam.start(start_lambda=start_lambda)
        except BaseException:
            self.credentials_server.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.sam.stop()
        finally:
            self.credentials_server.stop()

    def invoke(self, spec: FunctionSpec, event: Any) -> Invocation:
        with self._count_lock:
            self.invocations[spec.logical_id] += 1
        payload, errored, logs = self.sam.invoke(
            spec.logical_id, event, timeout=spec.timeout_seconds + INVOKE_GRACE_SECONDS
        )
        if errored:
            log.error("%s failed in its container:\n%s%s", spec.logical_id, payload[:2000], logs[-4000:])
        if not payload.strip():  # the runtime died before answering: Lambda reports Runtime.ExitError
            payload = json.dumps({"errorType": "Runtime.ExitError", "errorMessage": "the runtime exited"})
        return Invocation(payload=payload, errored=errored, logs=logs)
