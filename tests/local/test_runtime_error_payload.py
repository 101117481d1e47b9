"""Telling a function's error from its answer in what `sam local` returns (local/sam_local.py)."""

from __future__ import annotations

import json

import pytest

from local.sam_local import is_runtime_error


@pytest.mark.parametrize(
    "document",
    [
        {
            "errorMessage": "The image is empty",
            "errorType": "TaskFailure",
            "requestId": "r",
            "stackTrace": [],
        },
        {"errorMessage": "m", "errorType": "ValueError", "stackTrace": ["  File ..."]},
        {"errorMessage": "Task timed out after 3.00 seconds", "errorType": "Runtime.ExitError"},
    ],
)
def test_the_runtimes_error_documents_are_errors(document: dict[str, object]) -> None:
    assert is_runtime_error(json.dumps(document))


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps({"statusCode": 400, "body": '{"errorMessage": "x", "errorType": "y"}'}),
        json.dumps({"errorMessage": "m", "errorType": "t", "statusCode": 500}),  # an answer with more
        json.dumps({"errorMessage": "only a message"}),
        json.dumps(["errorMessage", "errorType"]),
        "null",
        "not json",
    ],
)
def test_answers_are_not_errors(payload: str) -> None:
    assert not is_runtime_error(payload)
