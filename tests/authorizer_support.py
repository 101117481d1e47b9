"""Helpers shared by the authorizer tests (local, OIDC and Keystone modes): the canonical REQUEST event
with a token, the handler invoked as API Gateway would, and the settings the handler caches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from functions.authorizer import app
from tests.support import FakeLambdaContext, load_event

EVENT_NAME = "authorizer_request.json"
WILDCARD = "arn:aws:execute-api:us-east-1:123456789012:tasksapi/v1/*/*"


def authorizer_event(token: str | None, extra_headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The canonical event with `token` in X-Auth-Token (or no token header at all), plus any extra headers."""
    event = load_event(EVENT_NAME)
    event["headers"] = {k: v for k, v in event["headers"].items() if k.lower() != "x-auth-token"}
    event["multiValueHeaders"] = {
        k: v for k, v in event["multiValueHeaders"].items() if k.lower() != "x-auth-token"
    }
    headers = ({"X-Auth-Token": token} if token is not None else {}) | (extra_headers or {})
    for name, value in headers.items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    return event


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return app.lambda_handler(event, FakeLambdaContext())  # type: ignore[arg-type]


def assert_unauthorized(event: dict[str, Any]) -> None:
    with pytest.raises(Exception) as raised:
        invoke(event)
    assert str(raised.value) == "Unauthorized"


def use_settings(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    """Set environment variables and drop the cached authorizer so the next call reads them."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    app.get_authorizer.cache_clear()


def log_lines(caplog: pytest.LogCaptureFixture, level: str) -> list[str]:
    """`message: reason` for each log record at `level`."""
    return [f"{r.getMessage()}: {getattr(r, 'reason', '')}" for r in caplog.records if r.levelname == level]


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler for fake servers that keeps the test output free of access-log lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_on_loopback(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free loopback port for the block; yields the base URL (no trailing slash)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
