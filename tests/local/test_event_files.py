"""events/ covers the template: every function, every route of the API, every EventBridge rule and
schedule, and every Lambda state of the workflow has an event file, naming no real host.
tests/e2e/test_invoke_events.py runs each file through `make invoke`'s code and checks its outcome."""

from __future__ import annotations

import re
from typing import Any

from local.events import matches
from local.invoke import function_for_event, payload_fits, read_event, workflow_payloads
from local.template import LocalTemplate
from tests.support import EVENTS

EVENT_FILES = {path.name: read_event(path) for path in sorted(EVENTS.glob("*.json"))}
URL_HOST = re.compile(r"[a-z][a-z0-9+.-]*://([^/:?#\s\"]+)", re.IGNORECASE)
DOMAIN = re.compile(r"\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|io|cloud|aws|dev)\b", re.IGNORECASE)


def _api_events() -> list[dict[str, Any]]:
    return [event for event in EVENT_FILES.values() if "httpMethod" in event and "type" not in event]


def test_every_function_of_the_template_has_an_event(local_template: LocalTemplate) -> None:
    covered = {function_for_event(local_template, event) for event in EVENT_FILES.values()}

    assert sorted(set(local_template.functions) - covered) == []


def test_every_route_has_an_event(local_template: LocalTemplate) -> None:
    missing = [
        f"{route.method} {route.path}"
        for route in local_template.routes
        if not any(
            event["resource"] == route.path and route.method in ("ANY", event["httpMethod"])
            for event in _api_events()
        )
    ]

    assert missing == []


def test_the_authorizer_has_its_request_event(local_template: LocalTemplate) -> None:
    authorizers = {route.authorizer_logical_id for route in local_template.routes} - {None}
    requests = [event for event in EVENT_FILES.values() if event.get("type") == "REQUEST"]

    assert {function_for_event(local_template, event) for event in requests} == authorizers


def test_every_eventbridge_rule_and_schedule_has_an_event(local_template: LocalTemplate) -> None:
    missing = [
        rule.name
        for rule in local_template.event_rules
        if not any(
            event.get("detail-type") == "Scheduled Event"
            if rule.schedule_seconds is not None
            else rule.pattern is not None and matches(rule.pattern, event)
            for event in EVENT_FILES.values()
            if "detail-type" in event
        )
    ]

    assert local_template.event_rules and missing == []


def test_every_lambda_state_of_the_workflow_has_an_event(local_template: LocalTemplate) -> None:
    payloads = workflow_payloads(local_template)
    missing = [
        (logical_id, payload)
        for logical_id, payload in payloads
        if not any(payload_fits(payload, event) for event in EVENT_FILES.values())
    ]

    assert len(payloads) >= 8 and missing == []  # TakeSlot, the import, convert, export steps, ...


def test_every_s3_notification_has_an_event_naming_its_local_bucket(local_template: LocalTemplate) -> None:
    notified = {spec.name for spec in local_template.buckets.values() if spec.notifications}
    named = {
        record["s3"]["bucket"]["name"]
        for event in EVENT_FILES.values()
        for record in event.get("Records", [])
    }

    assert notified and notified <= named


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (*_strings(key), *_strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return [value] if isinstance(value, str) else []


def test_events_name_only_loopback_or_invalid_hosts() -> None:
    named: list[str] = []
    for name, event in EVENT_FILES.items():
        for text in _strings(event):
            named += [f"{name}: {host}" for host in URL_HOST.findall(text)]
            named += [f"{name}: {domain}" for domain in DOMAIN.findall(text)]
        for headers in (event.get("headers") or {}, event.get("requestContext") or {}):
            for key in ("Host", "domainName"):
                if key in headers:
                    named.append(f"{name}: {headers[key].partition(':')[0]}")

    refused = [
        entry
        for entry in named
        if entry.split(": ", 1)[1] not in ("127.0.0.1", "localhost") and not entry.endswith(".invalid")
    ]
    assert named and refused == []
