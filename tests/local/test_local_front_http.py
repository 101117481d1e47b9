"""The local front as API Gateway's edge for malformed HTTP and encoded paths: a Content-Length that
is not a number is a 400 at once (it used to hang), and a path keeps its percent-encoding while each
path parameter is decoded once."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from local.front import ApiFront, FrontServer, _content_length, _Server


class Recording:
    """The front's runner: records the events it would invoke functions with, answers 204."""

    def __init__(self, template: Any) -> None:
        self.functions = template.functions
        self.events: list[dict[str, Any]] = []

    def invoke(self, spec: Any, event: dict[str, Any]) -> Any:
        self.events.append(event)

        class Done:
            errored = False
            payload = json.dumps(
                {"principalId": "u", "policyDocument": {"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}]},
                 "context": {"project_id": "p"}, "statusCode": 204, "body": "", "headers": {}}
            ).encode()  # fmt: skip

            def result(self) -> Any:
                return json.loads(self.payload)

        return Done()


@pytest.fixture
def served(local_template: Any) -> Iterator[tuple[FrontServer, Recording]]:
    runner = Recording(local_template)
    server = FrontServer(ApiFront(local_template, runner), "127.0.0.1", 0)  # type: ignore[arg-type]
    server.start()
    try:
        yield server, runner
    finally:
        server.stop()


def exchange(server: FrontServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            if not chunk:
                return received
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "+5", " ", "0x10", "\u0661", "99999999999999999999"])
def test_a_content_length_that_is_not_a_number_is_400_at_once(
    served: tuple[FrontServer, Recording], length: str
) -> None:
    server, runner = served
    request = f"POST /v2/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode()
    answer = exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"Content-Length must be one non-negative number" in answer
    assert runner.events == []  # nothing was invoked


def test_two_content_lengths_that_disagree_are_400(served: tuple[FrontServer, Recording]) -> None:
    server, _ = served
    request = b"POST /v2/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    assert exchange(server, request).startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize(
    ("values", "length"), [([], 0), (["0"], 0), (["17"], 17), (["5", "5"], 5), ([" 5 "], 5)]
)
def test_well_formed_content_lengths_are_read(values: list[str], length: int) -> None:
    assert _content_length(values) == length


@pytest.mark.parametrize(
    ("encoded", "tag"),
    [
        ("%E2%82%AC", "\u20ac"),
        ("%F0%9F%98%80", "\U0001f600"),
        ("caf%C3%A9", "caf\u00e9"),
        ("a%20b", "a b"),
        ("%0D%0A", "\r\n"),
        ("100%25", "100%"),
        ("%2525", "%25"),  # decoded once, not twice
        ("a%2Fb", "a/b"),
    ],
)
def test_the_path_stays_encoded_and_each_parameter_is_decoded_once(
    served: tuple[FrontServer, Recording], encoded: str, tag: str
) -> None:
    server, runner = served
    image = "5e0c8f4e-0000-4000-8000-000000000001"
    request = (
        f"PUT /v2/images/{image}/tags/{encoded} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: t\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    answer = exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 204"), answer
    event = runner.events[-1]
    assert event["path"] == f"/v2/images/{image}/tags/{encoded}"
    assert event["pathParameters"] == {"image_id": image, "tag": tag}
    assert event["requestContext"]["domainName"] == f"127.0.0.1:{server.port}"


def test_a_client_gone_before_its_answer_is_a_log_line_and_other_errors_keep_their_traceback(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from http.server import BaseHTTPRequestHandler

    server = _Server(("127.0.0.1", 0), BaseHTTPRequestHandler)
    try:
        for error in (BrokenPipeError(32, "Broken pipe"), ValueError("a defect")):
            try:
                raise error
            except Exception:
                with caplog.at_level(logging.INFO, logger="local.front"):
                    server.handle_error(None, ("127.0.0.1", 40000))
    finally:
        server.server_close()

    assert "127.0.0.1 went away before its answer" in caplog.text
    printed = capsys.readouterr().err
    assert "ValueError: a defect" in printed and "BrokenPipeError" not in printed
