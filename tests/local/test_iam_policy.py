"""The local IAM evaluator against the cases AWS documents for identity-based policies (the policy
evaluation logic, the policy element references and the condition operators), in our own words, and
the second permissions of the S3 requests that need two."""

from __future__ import annotations

from typing import Any

import pytest

from local.iam import events_checks, s3_checks
from local.iam_policy import Decision, evaluate

BUCKET = "arn:aws:s3:::images"
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/tasks"


def allow(**statement: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **statement}]}


def deny(**statement: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", **statement}]}


# ------------------------------------------------------------------ the decision


def test_nothing_allows_so_the_request_is_implicitly_denied() -> None:
    assert evaluate([], "s3:GetObject", f"{BUCKET}/a") is Decision.IMPLICIT_DENY
    assert (
        evaluate([allow(Action="s3:PutObject", Resource="*")], "s3:GetObject", f"{BUCKET}/a")
        is Decision.IMPLICIT_DENY
    )


def test_an_explicit_deny_wins_over_any_allow_whatever_the_order() -> None:
    policies = [allow(Action="s3:*", Resource="*"), deny(Action="s3:DeleteObject", Resource=f"{BUCKET}/*")]
    assert evaluate(policies, "s3:DeleteObject", f"{BUCKET}/a") is Decision.EXPLICIT_DENY
    assert evaluate(list(reversed(policies)), "s3:DeleteObject", f"{BUCKET}/a") is Decision.EXPLICIT_DENY
    assert evaluate(policies, "s3:GetObject", f"{BUCKET}/a") is Decision.ALLOW


def test_an_allow_in_any_of_the_principals_policies_is_enough() -> None:
    policies = [
        allow(Action="s3:PutObject", Resource="*"),
        allow(Action="s3:GetObject", Resource=f"{BUCKET}/*"),
    ]
    assert evaluate(policies, "s3:GetObject", f"{BUCKET}/a") is Decision.ALLOW


# ------------------------------------------------------------------ Action, Resource and their Not forms


def test_action_names_are_case_insensitive_and_take_wildcards() -> None:
    assert evaluate([allow(Action="S3:getobject", Resource="*")], "s3:GetObject", BUCKET) is Decision.ALLOW
    assert (
        evaluate([allow(Action="dynamodb:Get*", Resource="*")], "dynamodb:GetItem", TABLE) is Decision.ALLOW
    )
    assert (
        evaluate([allow(Action="dynamodb:Get*", Resource="*")], "dynamodb:PutItem", TABLE)
        is Decision.IMPLICIT_DENY
    )
    # `?` is one character, not a regular expression quantifier
    assert evaluate([allow(Action="s3:GetObjec?", Resource="*")], "s3:GetObject", BUCKET) is Decision.ALLOW
    assert (
        evaluate([allow(Action="s3:GetObjec?", Resource="*")], "s3:GetObjects", BUCKET)
        is Decision.IMPLICIT_DENY
    )


def test_resource_arns_are_case_sensitive_and_a_dot_is_literal() -> None:
    policy = allow(Action="s3:GetObject", Resource="arn:aws:s3:::images/a.raw")
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::images/a.raw") is Decision.ALLOW
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::images/A.raw") is Decision.IMPLICIT_DENY
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::images/axraw") is Decision.IMPLICIT_DENY


def test_a_bucket_grant_is_not_a_grant_on_its_objects_nor_the_reverse() -> None:
    on_objects = allow(Action="s3:*", Resource=f"{BUCKET}/*")
    assert evaluate([on_objects], "s3:ListBucket", BUCKET) is Decision.IMPLICIT_DENY
    assert (
        evaluate([allow(Action="s3:*", Resource=BUCKET)], "s3:GetObject", f"{BUCKET}/a")
        is Decision.IMPLICIT_DENY
    )


def test_not_action_with_allow_allows_every_other_action_on_the_resources() -> None:
    policy = allow(NotAction="s3:DeleteObject", Resource=f"{BUCKET}/*")
    assert evaluate([policy], "s3:GetObject", f"{BUCKET}/a") is Decision.ALLOW
    assert evaluate([policy], "s3:DeleteObject", f"{BUCKET}/a") is Decision.IMPLICIT_DENY
    # NotAction does not widen the resources
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::other/a") is Decision.IMPLICIT_DENY


def test_not_resource_with_deny_denies_everything_outside_the_resources() -> None:
    policies = [allow(Action="s3:*", Resource="*"), deny(Action="s3:*", NotResource=[BUCKET, f"{BUCKET}/*"])]
    assert evaluate(policies, "s3:GetObject", f"{BUCKET}/a") is Decision.ALLOW
    assert evaluate(policies, "s3:GetObject", "arn:aws:s3:::other/a") is Decision.EXPLICIT_DENY


# ------------------------------------------------------------------ Condition


def test_an_allow_whose_condition_fails_does_not_apply_and_is_no_deny() -> None:
    conditional = allow(
        Action="events:PutEvents", Resource="*", Condition={"StringEquals": {"events:source": "imagetasks"}}
    )
    other = allow(Action="events:PutEvents", Resource="*")
    context = {"events:source": "someone.else"}
    assert evaluate([conditional], "events:PutEvents", "*", context) is Decision.IMPLICIT_DENY
    assert evaluate([conditional, other], "events:PutEvents", "*", context) is Decision.ALLOW
    assert evaluate([conditional], "events:PutEvents", "*", {"events:source": "imagetasks"}) is Decision.ALLOW


def test_condition_keys_are_case_insensitive_values_of_string_equals_are_not() -> None:
    policy = allow(
        Action="events:PutEvents", Resource="*", Condition={"StringEquals": {"Events:Source": "imagetasks"}}
    )
    assert evaluate([policy], "events:PutEvents", "*", {"events:source": "imagetasks"}) is Decision.ALLOW
    assert (
        evaluate([policy], "events:PutEvents", "*", {"events:source": "ImageTasks"}) is Decision.IMPLICIT_DENY
    )


def test_values_of_one_key_are_ored_keys_and_operators_are_anded() -> None:
    condition = {
        "StringEquals": {
            "events:source": ["imagetasks", "imagetasks.test"],
            "events:detail-type": "Task Succeeded",
        },
        "Bool": {"aws:SecureTransport": "true"},
    }
    policy = allow(Action="events:PutEvents", Resource="*", Condition=condition)
    good = {
        "events:source": "imagetasks.test",
        "events:detail-type": "Task Succeeded",
        "aws:SecureTransport": "true",
    }
    assert evaluate([policy], "events:PutEvents", "*", good) is Decision.ALLOW
    for key, wrong in [
        ("events:source", "x"),
        ("events:detail-type", "Task Failed"),
        ("aws:SecureTransport", "false"),
    ]:
        assert evaluate([policy], "events:PutEvents", "*", {**good, key: wrong}) is Decision.IMPLICIT_DENY


def test_a_key_missing_from_the_request_fails_a_condition_unless_if_exists() -> None:
    strict = allow(
        Action="s3:GetObject", Resource="*", Condition={"StringEquals": {"s3:ExistingObjectTag/kind": "disk"}}
    )
    lenient = allow(
        Action="s3:GetObject",
        Resource="*",
        Condition={"StringEqualsIfExists": {"s3:ExistingObjectTag/kind": "disk"}},
    )
    assert evaluate([strict], "s3:GetObject", BUCKET, {}) is Decision.IMPLICIT_DENY
    assert evaluate([lenient], "s3:GetObject", BUCKET, {}) is Decision.ALLOW
    assert (
        evaluate([lenient], "s3:GetObject", BUCKET, {"s3:ExistingObjectTag/kind": "iso"})
        is Decision.IMPLICIT_DENY
    )


def test_null_tests_whether_the_key_is_in_the_request() -> None:
    # AWS's example of enforcing conditional deletes: allowed only with an If-Match header
    policy = allow(
        Action="s3:DeleteObject", Resource=f"{BUCKET}/*", Condition={"Null": {"s3:if-match": "false"}}
    )
    assert evaluate([policy], "s3:DeleteObject", f"{BUCKET}/a", {"s3:if-match": '"etag"'}) is Decision.ALLOW
    assert evaluate([policy], "s3:DeleteObject", f"{BUCKET}/a", {}) is Decision.IMPLICIT_DENY


def test_bool_denies_requests_not_made_over_tls() -> None:
    # The buckets' own policy: deny s3:* when aws:SecureTransport is false
    policies = [
        allow(Action="s3:*", Resource="*"),
        deny(Action="s3:*", Resource="*", Condition={"Bool": {"aws:SecureTransport": "false"}}),
    ]
    assert (
        evaluate(policies, "s3:GetObject", BUCKET, {"aws:SecureTransport": "false"}) is Decision.EXPLICIT_DENY
    )
    assert evaluate(policies, "s3:GetObject", BUCKET, {"aws:SecureTransport": "true"}) is Decision.ALLOW


def test_string_like_and_arn_like_match_with_wildcards_part_by_part() -> None:
    like = allow(
        Action="states:StartExecution", Resource="*", Condition={"StringLike": {"aws:userid": "AROA*:task-*"}}
    )
    assert evaluate([like], "states:StartExecution", "*", {"aws:userid": "AROA1:task-9"}) is Decision.ALLOW
    assert (
        evaluate([like], "states:StartExecution", "*", {"aws:userid": "AROA1:job-9"})
        is Decision.IMPLICIT_DENY
    )
    arn_like = allow(
        Action="iam:PassRole",
        Resource="*",
        Condition={"ArnLike": {"aws:SourceArn": "arn:aws:states:*:123456789012:stateMachine:*"}},
    )
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:flow"
    assert evaluate([arn_like], "iam:PassRole", "*", {"aws:SourceArn": machine}) is Decision.ALLOW
    # a wildcard does not run over a colon into the next part of the ARN
    other_account = "arn:aws:states:us-east-1:999999999999:stateMachine:flow"
    assert (
        evaluate([arn_like], "iam:PassRole", "*", {"aws:SourceArn": other_account}) is Decision.IMPLICIT_DENY
    )


def test_negated_operators_hold_when_the_key_is_absent() -> None:
    policy = deny(
        Action="s3:*", Resource="*", Condition={"StringNotEquals": {"aws:RequestedRegion": "us-east-1"}}
    )
    assert (
        evaluate([allow(Action="s3:*", Resource="*"), policy], "s3:GetObject", BUCKET, {})
        is Decision.EXPLICIT_DENY
    )
    region = {"aws:RequestedRegion": "us-east-1"}
    assert (
        evaluate([allow(Action="s3:*", Resource="*"), policy], "s3:GetObject", BUCKET, region)
        is Decision.ALLOW
    )


@pytest.mark.parametrize(
    ("qualifier", "values", "expected"),
    [
        ("ForAnyValue", ["a", "z"], Decision.ALLOW),
        ("ForAnyValue", ["y", "z"], Decision.IMPLICIT_DENY),
        ("ForAllValues", ["a", "b"], Decision.ALLOW),
        ("ForAllValues", ["a", "z"], Decision.IMPLICIT_DENY),
    ],
)
def test_set_operators_over_multivalued_keys(qualifier: str, values: list[str], expected: Decision) -> None:
    policy = allow(
        Action="dynamodb:GetItem",
        Resource="*",
        Condition={f"{qualifier}:StringEquals": {"dynamodb:Attributes": ["a", "b"]}},
    )
    assert evaluate([policy], "dynamodb:GetItem", TABLE, {"dynamodb:Attributes": values}) is expected


# ------------------------------------------------------------------ requests that need two permissions


def test_a_copy_needs_get_object_on_its_source_and_put_object_on_its_destination() -> None:
    headers = {"x-amz-copy-source": "/staging/task%201/image?versionId=3"}
    pairs = list(s3_checks("PutObject", "arn:aws:s3:::images/images/i1", headers, b"", ""))
    assert pairs == [
        ("PutObject", "arn:aws:s3:::images/images/i1"),
        ("GetObject", "arn:aws:s3:::staging/task 1/image"),
    ]
    # UploadPartCopy is the same PUT with a part number
    parts = list(s3_checks("PutObject", "arn:aws:s3:::images/i", headers, b"", "partNumber=2&uploadId=u"))
    assert ("GetObject", "arn:aws:s3:::staging/task 1/image") in parts


def test_a_delete_conditional_on_an_etag_needs_get_object_too() -> None:
    key = "arn:aws:s3:::uploads/uploads/p/disk"
    assert list(s3_checks("DeleteObject", key, {"If-Match": '"abc"'}, b"", "")) == [
        ("DeleteObject", key),
        ("GetObject", key),
    ]
    assert list(s3_checks("DeleteObject", key, {"If-Match": "*"}, b"", "")) == [("DeleteObject", key)]
    assert list(s3_checks("DeleteObject", key, {}, b"", "")) == [("DeleteObject", key)]


def test_delete_objects_is_a_delete_of_each_key_not_of_the_bucket() -> None:
    body = (
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>t/a</Key></Object>'
        b'<Object><Key>t/b</Key><ETag>"e"</ETag></Object></Delete>'
    )
    assert list(s3_checks("DeleteObject", "arn:aws:s3:::staging", {}, body, "delete")) == [
        ("DeleteObject", "arn:aws:s3:::staging/t/a"),
        ("DeleteObject", "arn:aws:s3:::staging/t/b"),
        ("GetObject", "arn:aws:s3:::staging/t/b"),
    ]


def test_put_events_is_authorised_entry_by_entry_with_its_source() -> None:
    body = {
        "Entries": [
            {"Source": "imagetasks", "DetailType": "Task Succeeded", "Detail": "{}"},
            {"Source": "other", "DetailType": "X", "Detail": "{}", "EventBusName": "ops"},
        ]
    }
    checks = list(events_checks("PutEvents", body, "/"))
    assert [(action, resource) for action, resource, _ in checks] == [
        ("PutEvents", "arn:aws:events:us-east-1:123456789012:event-bus/default"),
        ("PutEvents", "arn:aws:events:us-east-1:123456789012:event-bus/ops"),
    ]
    assert [context["events:source"] for _, _, context in checks] == ["imagetasks", "other"]
