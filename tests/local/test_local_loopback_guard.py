"""The local stack never reaches real AWS: once moto's mock is off (the stack stopping while work
still runs), a request to an AWS endpoint is refused at once, without even a DNS look-up."""

from __future__ import annotations

import socket
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from moto import mock_aws

from local import loopback_guard


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:5000/", True),
        ("http://[::1]:5000/", True),
        ("http://localhost:5000/", True),
        ("http://172.17.0.1:5000/", True),  # the host seen from the containers' network
        ("https://dynamodb.us-east-1.amazonaws.com/", False),
        ("https://localhost.evil.example/", False),
        ("https://127.0.0.1.wildcard-dns.test/", False),  # a name that would resolve to loopback
        ("https://8.8.8.8/", False),
        ("", False),
    ],
)
def test_only_this_machine_counts_as_local(url: str, local: bool) -> None:
    assert loopback_guard.is_local(url) is local


def test_a_client_used_after_the_mock_stopped_is_refused_without_a_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a client made while the stack's mock was on, the guard installed as the stack does
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mock = mock_aws()
    mock.start()
    loopback_guard.install()
    client = boto3.client("dynamodb")
    assert client.list_tables()["TableNames"] == []  # moto answers while it is on
    mock.stop()
    loopback_guard.install()
    lookups: list[Any] = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: lookups.append(args) or [])

    # When that client, and one made now, call DynamoDB
    for dynamodb in (client, boto3.client("dynamodb")):
        with pytest.raises(EndpointConnectionError, match="never reaches AWS"):
            dynamodb.list_tables()

    # Then nothing was even looked up
    assert lookups == []
