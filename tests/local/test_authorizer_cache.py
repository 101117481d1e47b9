"""The local front caches the authorizer's answer as API Gateway does: per identity (the token), for
the authorizer's TTL (the template's AuthorizerCacheSeconds), its policy evaluated against each later
request's own method ARN; an authorizer error is not kept."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from local.front import ApiFront
from local.template import load_template

ALLOW_EVERY_ROUTE = "arn:aws:execute-api:*"


class Authorizing:
    """The front's runner: the authorizer answers a policy allowing `resource` (the request's own
    method ARN when None) or raises `Unauthorized`; every other function answers 204."""

    def __init__(self, template: Any) -> None:
        self.functions = template.functions
        self.authorizer_events: list[dict[str, Any]] = []
        self.resource: str | None = ALLOW_EVERY_ROUTE
        self.unauthorized = False

    def invoke(self, spec: Any, event: dict[str, Any]) -> Any:
        if event.get("type") == "REQUEST":
            self.authorizer_events.append(event)
            if self.unauthorized:
                return _Done(True, {"errorMessage": "Unauthorized", "errorType": "Exception"})
            policy = {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": self.resource or event["methodArn"]}
            ]}  # fmt: skip
            return _Done(
                False, {"principalId": "u", "policyDocument": policy, "context": {"project_id": "p"}}
            )
        return _Done(False, {"statusCode": 204, "body": "", "headers": {}})


class _Done:
    def __init__(self, errored: bool, payload: dict[str, Any]) -> None:
        self.errored = errored
        self.payload = json.dumps(payload)


def _front(template: Any) -> tuple[ApiFront, Authorizing]:
    runner = Authorizing(template)
    return ApiFront(template, runner), runner  # type: ignore[arg-type]


def _get(front: ApiFront, path: str, token: str) -> int:
    return front.handle("GET", path, [("X-Auth-Token", token), ("Accept", "application/json")], b"").status


def test_the_template_caches_the_authorizer_for_authorizer_cache_seconds(local_template: Any) -> None:
    from tests.conftest import ROOT

    guarded = [route for route in local_template.routes if route.authorizer_logical_id]
    assert guarded and {route.authorizer_cache_seconds for route in guarded} == {300}
    uncached = load_template(ROOT / "template.yaml", {"AuthorizerCacheSeconds": "0"})
    assert {r.authorizer_cache_seconds for r in uncached.routes if r.authorizer_logical_id} == {0}


def test_one_token_is_authorized_once_for_every_route(local_template: Any) -> None:
    front, runner = _front(local_template)

    statuses = [_get(front, path, "token-a") for path in ("/v2/tasks", "/v2/images", "/v2/tasks")]

    assert statuses == [204, 204, 204]
    assert len(runner.authorizer_events) == 1
    assert _get(front, "/v2/tasks", "token-b") == 204
    assert len(runner.authorizer_events) == 2  # another identity, another call


def test_a_cached_answer_for_one_route_only_denies_the_others(local_template: Any) -> None:
    """The trap of a cached authorizer on AWS: a policy naming only the first request's method ARN."""
    front, runner = _front(local_template)
    runner.resource = None

    assert _get(front, "/v2/tasks", "token-a") == 204
    assert _get(front, "/v2/images", "token-a") == 403
    assert len(runner.authorizer_events) == 1


def test_an_authorizer_error_is_not_kept(local_template: Any) -> None:
    front, runner = _front(local_template)
    runner.unauthorized = True
    assert _get(front, "/v2/tasks", "token-a") == 401

    runner.unauthorized = False
    assert _get(front, "/v2/tasks", "token-a") == 204
    assert len(runner.authorizer_events) == 2


def test_an_answer_expires_after_its_ttl(local_template: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import local.front

    now = [1000.0]
    monkeypatch.setattr(local.front.time, "monotonic", lambda: now[0])
    front, runner = _front(local_template)

    _get(front, "/v2/tasks", "token-a")
    now[0] += 299
    _get(front, "/v2/tasks", "token-a")
    assert len(runner.authorizer_events) == 1
    now[0] += 2
    _get(front, "/v2/tasks", "token-a")
    assert len(runner.authorizer_events) == 2


def test_without_a_ttl_every_request_calls_the_authorizer(local_template: Any) -> None:
    routes = [replace(route, authorizer_cache_seconds=0) for route in local_template.routes]
    front, runner = _front(replace(local_template, routes=routes))

    for _ in range(3):
        _get(front, "/v2/tasks", "token-a")

    assert len(runner.authorizer_events) == 3


def test_two_tokens_in_one_request_are_not_the_first_ones_identity(local_template: Any) -> None:
    front, runner = _front(local_template)
    _get(front, "/v2/tasks", "token-a")

    headers = [("X-Auth-Token", "token-a"), ("X-Auth-Token", "token-b")]
    front.handle("GET", "/v2/tasks", headers, b"")

    assert len(runner.authorizer_events) == 2
