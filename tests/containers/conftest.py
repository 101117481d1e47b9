"""The container tier: the built functions under `sam local start-lambda` on podman (local/sam_local.py).

Needs `make build` and `make containers` (root). Skipped with the reason when those are missing,
except when IMAGETASKS_REQUIRE_CONTAINERS=1 (CI sets it): then a missing piece is a failure.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from local.sam_local import SamLocal, host_address, missing_prerequisites
from tests.build.conftest import require

#: Credentials the host's fake credentials server hands out, per function logical id.
FUNCTION_CREDENTIALS = {
    "TasksApiFunction": {
        "AccessKeyId": "ASIATASKSAPIFUNCTION",
        "SecretAccessKey": "tasks-api-secret",
        "SessionToken": "tasks-api-session",
    }
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "containers: the built functions in Lambda-like containers (podman)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "containers" in item.path.parts:
            item.add_marker(pytest.mark.containers)


@dataclass
class HostServer:
    """One HTTP server on the host's bridge address: credentials at /credentials/<name>, and a fake AWS
    endpoint (every other path) that records the access key of each signed request and refuses it."""

    url: str
    credential_requests: list[str] = field(default_factory=list)
    access_keys: list[str] = field(default_factory=list)


def _handler(server: HostServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(
            self, status: int, document: dict[str, Any], content_type: str = "application/json"
        ) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/credentials/"):
                name = self.path.removeprefix("/credentials/")
                server.credential_requests.append(name)
                if name in FUNCTION_CREDENTIALS:
                    self._answer(200, FUNCTION_CREDENTIALS[name])
                else:
                    self._answer(404, {"message": "no such function"})
                return
            self._refuse()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._refuse()

        def _refuse(self) -> None:
            authorization = self.headers.get("Authorization") or ""
            if "Credential=" in authorization:
                server.access_keys.append(authorization.split("Credential=", 1)[1].split("/", 1)[0])
            self._answer(
                400,
                {"__type": "com.amazonaws.dynamodb.v20120810#UnrecognizedClientException", "message": "fake"},
                "application/x-amz-json-1.0",
            )

    return Handler


@pytest.fixture(scope="session")
def container_tier() -> Iterator[tuple[SamLocal, HostServer]]:
    """`sam local start-lambda` over .aws-sam/build, with a credentials server and a fake AWS endpoint."""
    reason = missing_prerequisites()
    require(reason is None, f"container tier not set up: {reason}")
    address = host_address()
    state = HostServer(url="")
    httpd = ThreadingHTTPServer((address, 0), _handler(state))
    state.url = f"http://{address}:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    sam = SamLocal(
        container_env={
            "AWS_ENDPOINT_URL": state.url,
            "IMAGETASKS_CREDENTIALS_URL": f"{state.url}/credentials",
            "POWERTOOLS_TRACE_DISABLED": "true",
        },
        parameter_overrides={"LogLevel": "DEBUG"},
    )
    try:
        sam.start()
        yield sam, state
    finally:
        sam.stop()
        httpd.shutdown()
        httpd.server_close()
