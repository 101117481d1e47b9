"""The IAM ledger's bookkeeping: grants expanded from the roles, matched with recorded calls, and
the explanations the template gives for grants no test uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from local import iam, iam_ledger
from tests.iam_ledger import Ledger, grants, read_calls, reasons, render, uses

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/tasks"
BUCKET = "arn:aws:s3:::staging"


def role(owner: str, *statements: dict[str, Any], policy: str = "Policy0") -> iam.Role:
    return iam.Role(
        role_logical_id=f"{owner}Role",
        trust_policy={},
        inline_policies={policy: {"Statement": list(statements)}},
        managed_policy_arns=(),
    )


def ledger_of(
    roles: dict[str, iam.Role], calls: dict[tuple[str, str, str], set[str]], metadata: dict[str, Any]
) -> Ledger:
    granted = grants(roles)
    translated = {
        "Resources": {
            logical_id: {"Type": "AWS::Lambda::Function", "Metadata": m} for logical_id, m in metadata.items()
        }
    }
    return Ledger(granted, uses(granted, calls), reasons(translated, roles), {})


def test_each_action_on_each_resource_of_an_allow_is_one_grant_and_denies_are_none() -> None:
    roles = {
        "Fn": role(
            "Fn",
            {
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:Query"],
                "Resource": [TABLE, f"{TABLE}/index/*"],
            },
            {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE},  # the same grant again
            {"Effect": "Deny", "Action": "s3:*", "Resource": "*"},
        )
    }
    found = {(g.principal, g.action, g.resource) for g in grants(roles)}
    assert found == {
        ("Fn", "dynamodb:GetItem", TABLE),
        ("Fn", "dynamodb:GetItem", f"{TABLE}/index/*"),
        ("Fn", "dynamodb:Query", TABLE),
        ("Fn", "dynamodb:Query", f"{TABLE}/index/*"),
    }


def test_a_call_exercises_the_grants_that_allow_it_and_only_for_its_own_principal() -> None:
    roles = {
        "Fn": role(
            "Fn",
            {
                "Effect": "Allow",
                "Action": ["s3:DeleteObject", "s3:ListBucket"],
                "Resource": [f"{BUCKET}/*", BUCKET],
            },
        ),
        "Other": role("Other", {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"{BUCKET}/*"}),
    }
    calls = {
        ("Fn", "s3:deleteobject", f"{BUCKET}/task-1/image"): {"tests/a.py::test_one", "tests/b.py::test_two"}
    }
    ledger = ledger_of(roles, calls, {})
    used = {(g.principal, g.action, g.resource): sorted(ledger.used[g].tests) for g in ledger.granted}
    assert used[("Fn", "s3:DeleteObject", f"{BUCKET}/*")] == ["tests/a.py::test_one", "tests/b.py::test_two"]
    assert used[("Fn", "s3:DeleteObject", BUCKET)] == []  # the bucket is not an object of it
    assert used[("Fn", "s3:ListBucket", f"{BUCKET}/*")] == []
    assert used[("Other", "s3:DeleteObject", f"{BUCKET}/*")] == []


def test_an_unused_grant_is_reasoned_by_its_sid_or_policy_name_else_unexplained_and_stale_reasons_show() -> (
    None
):
    roles = {
        "Fn": role(
            "Fn",
            {"Sid": "LogDelivery", "Effect": "Allow", "Action": "logs:CreateLogDelivery", "Resource": "*"},
            {"Effect": "Allow", "Action": "s3:PutObjectAcl", "Resource": f"{BUCKET}/*"},
        ),
        "Async": role(
            "Async",
            {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"},
            policy="AsyncOnFailurePolicy",
        ),
    }
    metadata = {
        "Fn": {
            "IamLedger": {"Unexercised": {"LogDelivery": "The service delivers logs itself.", "Gone": "old"}}
        },
        "Async": {"IamLedger": {"Unexercised": {"AsyncOnFailurePolicy": "Lambda sends failed events."}}},
    }
    ledger = ledger_of(roles, {}, metadata)
    assert {(g.principal, g.action) for g in ledger.reasoned} == {
        ("Fn", "logs:CreateLogDelivery"),
        ("Async", "sqs:SendMessage"),
    }
    assert [(g.principal, g.action) for g in ledger.unexplained] == [("Fn", "s3:PutObjectAcl")]
    assert list(ledger.stale_reasons()) == ["Fn: Gone"]
    page = render(ledger)
    assert "**not exercised**: The service delivers logs itself." in page
    assert "**not exercised**: NO REASON GIVEN" in page


def test_calls_are_recorded_per_process_with_the_running_test_and_merged(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv(iam_ledger.ENVIRONMENT, str(tmp_path))
    monkeypatch.setattr(iam_ledger, "_calls", {})
    monkeypatch.setattr(iam_ledger, "_file", None)
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/e2e/test_x.py::test_y (call)")
    iam_ledger.record("Fn", "s3:GetObject", f"{BUCKET}/a")
    iam_ledger.record("Fn", "s3:GetObject", f"{BUCKET}/a")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/e2e/test_x.py::test_z (teardown)")
    iam_ledger.record("Fn", "s3:GetObject", f"{BUCKET}/a")
    iam_ledger.flush()
    (tmp_path / "calls-other.json").write_text(
        json.dumps(
            [
                {
                    "principal": "Fn",
                    "action": "s3:GetObject",
                    "resource": f"{BUCKET}/a",
                    "tests": ["tests/u.py::t"],
                }
            ]
        )
    )

    merged = read_calls(tmp_path)

    assert merged == {
        ("Fn", "s3:GetObject", f"{BUCKET}/a"): {
            "tests/e2e/test_x.py::test_y",
            "tests/e2e/test_x.py::test_z",
            "tests/u.py::t",
        }
    }


def test_nothing_is_recorded_without_the_ledger_directory(monkeypatch: Any) -> None:
    monkeypatch.delenv(iam_ledger.ENVIRONMENT, raising=False)
    monkeypatch.setattr(iam_ledger, "_calls", {})
    iam_ledger.record("Fn", "s3:GetObject", f"{BUCKET}/a")
    assert iam_ledger._calls == {}
