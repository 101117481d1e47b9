"""Fixtures shared by the unit and integration tiers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "imagetasks")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "imagetasks")

from tests.support import ROOT


@pytest.fixture(scope="session")
def local_template() -> Any:
    from local.template import load_template

    return load_template(ROOT / "template.yaml")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, local_template: Any) -> Iterator[dict[str, str]]:
    """Moto with the template's tables and buckets, and the environment the functions get."""
    from moto import mock_aws

    from local.moto_fixes import serialise_dynamodb_writes
    from local.provision import create_buckets, create_state_machines, create_tables

    serialise_dynamodb_writes()
    with mock_aws():
        create_tables(local_template, boto3.client("dynamodb"))
        create_buckets(local_template, boto3.client("s3"))
        machines = create_state_machines(local_template, boto3.client("stepfunctions"))
        environment = dict(local_template.functions["TasksApiFunction"].environment)
        environment["STATE_MACHINE_ARN"] = machines["TaskWorkflow"]
        for key, value in environment.items():
            monkeypatch.setenv(key, str(value))
        yield environment


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("qemu_img") is not None:
        from tests.image_corpus import require_qemu_img

        require_qemu_img()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parts[-2] == "e2e":
            item.add_marker(pytest.mark.e2e)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Each process writes the calls its roles made (IMAGETASKS_IAM_LEDGER; docs/iam.md)."""
    from local import iam_ledger

    iam_ledger.flush()
