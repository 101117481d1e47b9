"""Every metric of the service's own namespace that an alarm or the dashboard in template.yaml watches
is one the code writes: the same namespace, name and dimension set (CloudWatch tells metrics apart by
all three, so an alarm on a dimension the code does not write watches nothing, silently), and
dimension values the code can write.

The code paths run on moto with the functions' environment from the template (Powertools' namespace
and service name), and their embedded-metric-format lines are read from stdout, as CloudWatch Logs
reads them on Lambda.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagetasks import composition
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.config import Settings
from imagetasks.domain.failures import ERROR_CODES
from imagetasks.domain.tasks import Task, TaskType, new_task
from imagetasks.services.task_lifecycle import Lifecycle
from local.template import load_yaml
from tests.image_corpus import make_raw
from tests.support import (
    IMPORT_INPUT,
    ROOT,
    FakeLambdaContext,
    api_event,
    call,
    load_handler,
    start_processing,
    tasks_api_handler,
)

NAMESPACE = "imagetasks"
TEMPLATE = ROOT / "template.yaml"
STEP_FUNCTIONS = ("import_task", "convert_task", "export_task")


@dataclass(frozen=True)
class Watched:
    """A metric of the namespace as the template names it: dimensions with values, or only their names
    (a dashboard SEARCH matches any value)."""

    where: str
    name: str
    dimensions: tuple[tuple[str, str | None], ...]

    @property
    def dimension_names(self) -> frozenset[str]:
        return frozenset(key for key, _ in self.dimensions)


# ------------------------------------------------------------------ what the template watches


def _alarm_metrics(logical_id: str, props: dict[str, Any]) -> Iterator[Watched]:
    stats = (
        [props]
        if "MetricName" in props
        else [q["MetricStat"]["Metric"] for q in props.get("Metrics") or [] if "MetricStat" in q]
    )
    for metric in stats:
        if metric.get("Namespace") == NAMESPACE:
            dimensions = tuple((d["Name"], d["Value"]) for d in metric.get("Dimensions") or [])
            yield Watched(logical_id, metric["MetricName"], dimensions)


_SEARCH = re.compile(r"SEARCH\('\{([^}]*)\}\s+MetricName=\"([^\"]+)\"")


def _dashboard_metrics(logical_id: str, body: str) -> Iterator[Watched]:
    # Parameters and attributes substituted by CloudFormation: any value keeps the JSON valid.
    document = json.loads(re.sub(r"\$\{[^}]+\}", "0", body))
    for widget in document["widgets"]:
        for row in (widget.get("properties") or {}).get("metrics") or []:
            if isinstance(row[0], dict):
                for namespace_and_keys, name in _SEARCH.findall(str(row[0].get("expression", ""))):
                    namespace, *keys = [part.strip() for part in namespace_and_keys.split(",")]
                    if namespace == NAMESPACE:
                        yield Watched(logical_id, name, tuple((key, None) for key in keys))
                continue
            fields = [part for part in row if not isinstance(part, dict)]
            if fields[0] == NAMESPACE:
                pairs = fields[2:]
                yield Watched(logical_id, fields[1], tuple(zip(pairs[::2], pairs[1::2], strict=True)))


def watched_metrics() -> list[Watched]:
    resources = load_yaml(TEMPLATE)["Resources"]
    found: list[Watched] = []
    for logical_id, resource in resources.items():
        props = resource.get("Properties") or {}
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            found += _alarm_metrics(logical_id, props)
        elif resource["Type"] == "AWS::CloudWatch::Dashboard":
            body = props["DashboardBody"]
            found += _dashboard_metrics(logical_id, body["Fn::Sub"] if isinstance(body, dict) else body)
    return found


# ------------------------------------------------------------------ what the code writes


@dataclass(frozen=True)
class Written:
    name: str
    dimensions: tuple[tuple[str, str], ...]

    @property
    def dimension_names(self) -> frozenset[str]:
        return frozenset(key for key, _ in self.dimensions)


def written_metrics(stdout: str) -> list[Written]:
    """The metrics of the EMF lines in `stdout`, each with the dimension set it is written under."""
    found = []
    for line in stdout.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE, line
            for dimension_set in directive["Dimensions"]:
                dimensions = tuple(sorted((key, str(blob[key])) for key in dimension_set))
                found += [Written(metric["Name"], dimensions) for metric in directive["Metrics"]]
    return found


class RefusingEvents:
    """EventBridge refusing every task event (the outbox keeps them)."""

    def task_finished(self, task: Task) -> None:
        raise RuntimeError("EventBridge is unavailable")


def stored(table: TasksTable, task_type: TaskType, processing: bool = False) -> str:
    task = new_task(task_type, {"n": 1}, "p1")
    table.create(task)
    if processing:
        start_processing(table, task)
    return task.id


def uploaded_import(aws: dict[str, str], tmp_path: Path) -> str:
    image = make_raw(tmp_path)
    key = f"uploads/p1/{image.name}"
    boto3.client("s3").put_object(Bucket=aws["UPLOADS_BUCKET"], Key=key, Body=image.read_bytes())
    task_input = {
        "import_from": f"s3://{aws['UPLOADS_BUCKET']}/{key}",
        "import_from_format": "raw",
        "image_properties": {"name": "disk", "disk_format": "raw", "container_format": "bare"},
    }
    task = new_task(TaskType.IMPORT, task_input, "p1")
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    table.create(task)
    start_processing(table, task)
    return task.id


@pytest.fixture
def code_written(aws: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[Written]:
    """What the code writes along the paths that produce each of the service's metrics."""
    assert aws["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE  # the functions' environment, from the template
    capsys.readouterr()
    # A task created through the API, then cancelled there (its running execution is stopped)
    api = tasks_api_handler()
    response = call(api, api_event("POST", "/v2/tasks", body={"type": "import", "input": IMPORT_INPUT}))
    assert response["statusCode"] == 201, response["body"]
    cancel = call(api, api_event("POST", f"/v2/tasks/{response['json']['id']}/actions/cancel"))
    assert cancel["statusCode"] < 300, cancel["body"]
    # Slots: each type waits, gets its slot and ends (succeeded, failed by a fault, cancelled); one waits on
    table = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
    lifecycle = Lifecycle(table, timedelta(hours=1), max_running=1, events=RefusingEvents())
    for task_type in TaskType:
        for end in ("succeed", "internal", "cancelled"):
            task_id = stored(table, task_type)
            assert lifecycle.wait_for_slot(task_id, f"token-{task_id}")["started"]
            if end == "succeed":
                lifecycle.succeed(task_id, {})
            else:
                lifecycle.fail(task_id, "ended", end)
    stored(table, TaskType.IMPORT, processing=False)
    stored(table, TaskType.CONVERT, processing=True)  # holds a slot the sweep reports
    lifecycle.sweep()
    # Processing steps on Lambda: an import that registers an image, then steps of tasks that do not exist
    steps = {name: load_handler(name) for name in STEP_FUNCTIONS}
    task_id = uploaded_import(aws, tmp_path)
    staged = steps["import_task"].lambda_handler({"step": "fetch", "task_id": task_id}, FakeLambdaContext())
    composition.import_task(Settings.from_environ()).register(task_id, staged)
    for name, step in (("convert_task", "convert"), ("export_task", "export"), ("import_task", "register")):
        with pytest.raises(Exception):  # noqa: B017 - a refusal; its time is measured all the same
            steps[name].lambda_handler({"step": step, "task_id": "no-such-task"}, FakeLambdaContext())
    return written_metrics(capsys.readouterr().out)


def step_names() -> set[str]:
    """The steps the processing functions accept (their event models' `step` literals)."""
    names: set[str] = set()
    for name in STEP_FUNCTIONS:
        module = load_handler(name)
        model = module.lambda_handler.__wrapped__.__annotations__["event"]
        model = getattr(module, model) if isinstance(model, str) else model
        names |= set(typing.get_args(model.model_fields["step"].annotation))
    return names


# ------------------------------------------------------------------ the contract


def test_the_template_watches_the_service_metrics_it_should() -> None:
    # The premise: the alarms and the dashboard do watch the namespace (else the contract is empty).
    names = {metric.name for metric in watched_metrics()}
    assert {"TaskEventsNotPublished", "OldestWaitingTaskAgeSeconds", "TasksFailed", "TasksCreated"} <= names


def test_every_watched_metric_is_written_by_the_code_with_its_name_and_dimensions(
    code_written: list[Written],
) -> None:
    written_sets = {(metric.name, metric.dimension_names) for metric in code_written}
    values: dict[str, set[str]] = {}
    for metric in code_written:
        for key, value in metric.dimensions:
            values.setdefault(key, set()).add(value)
    # The values a dimension can take, beyond those this run wrote.
    possible = {
        "service": {"imagetasks"},
        "type": {t.value for t in TaskType},
        "error_code": set(ERROR_CODES),
        "step": step_names(),
    }
    assert values["service"] == possible["service"]
    assert values["step"] <= possible["step"] and values["type"] <= possible["type"]

    for watched in watched_metrics():
        assert (watched.name, watched.dimension_names) in written_sets, (
            f"{watched.where} watches {watched.name} {sorted(watched.dimension_names)}; the code writes "
            f"{sorted(sorted(dims) for name, dims in written_sets if name == watched.name)}"
        )
        for key, value in watched.dimensions:
            assert value is None or value in possible[key], f"{watched.where}: {watched.name} {key}={value}"


def test_the_code_paths_write_every_metric_the_service_has(code_written: list[Written]) -> None:
    # Each metric of task_metrics, with the dimensions the alarms and the dashboard rely on.
    written = {(metric.name, metric.dimension_names) for metric in code_written}
    service = frozenset({"service"})
    assert written == {
        ("TasksCreated", service | {"type"}),
        ("TasksSucceeded", service | {"type"}),
        ("TasksFailed", service | {"type", "error_code"}),
        ("BytesImported", service),
        ("StepDuration", service | {"step"}),
        ("SlotWaitSeconds", service),
        ("SlotsInUse", service),
        ("OldestWaitingTaskAgeSeconds", service),
        ("TaskEventsNotPublished", service),
        ("ExecutionsStoppedByCancel", service),
    }
    failed = {dict(m.dimensions)["error_code"] for m in code_written if m.name == "TasksFailed"}
    assert failed == {"internal", "cancelled"}
    steps = {dict(m.dimensions)["step"] for m in code_written if m.name == "StepDuration"}
    assert steps == {"fetch", "register", "convert", "export"}
