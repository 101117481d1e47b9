"""The workflow adapter on Step Functions (moto): how a task's execution ended, as the sweeper asks."""

from __future__ import annotations

import boto3

from imagetasks.adapters.workflow import Workflow


def test_ended_says_how_an_execution_ended_and_none_while_it_runs_or_when_there_is_none(
    aws: dict[str, str],
) -> None:
    workflow = Workflow(aws["STATE_MACHINE_ARN"], boto3.client("stepfunctions"))
    workflow.start("task-running", "import")
    workflow.start("task-stopped", "import")
    assert workflow.stop("task-stopped", "Operator", "stopped by hand")

    assert workflow.ended("task-running") is None
    assert workflow.ended("task-stopped") == "ABORTED"
    assert workflow.ended("task-without-an-execution") is None  # not the workflow's to end
