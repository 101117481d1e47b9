"""Section 3, API cost per request: AWS calls and DynamoDB items read, as the task table grows.

The tasks API handler runs in-process on moto (``mock_aws``) with the tables of template.yaml. The
table is filled with tasks written in the shape ``TasksTable`` itself writes (its ``_write_ops``:
one main item and one index row per list partition), batch-written for speed. Every AWS call the
handler makes is counted by wrapping botocore's ``BaseClient._make_api_call``; items read are
DynamoDB's own figures (``ScannedCount`` of a Query, 1 per GetItem that found an item).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import REPOSITORY, fmt, say, summary, verdict

OWNERS = tuple(f"project-{n}" for n in range(10))
CALLER = "project-1"
OTHER = "project-2"
LIMIT = 20
STATUSES = ("pending", "processing", "success", "failure")
TYPES = ("import", "export", "convert")
SORT_KEYS = ("created_at", "updated_at", "status", "type", "id", "expires_at", "owner")


@dataclass
class CallLog:
    calls: list[str] = field(default_factory=list)
    items_read: int = 0

    def reset(self) -> None:
        self.calls.clear()
        self.items_read = 0


LOG = CallLog()


@contextmanager
def counting() -> Iterator[None]:
    """Count every AWS API call made through botocore, and DynamoDB's items read."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def counted(self: Any, operation_name: str, api_params: Any) -> Any:
        response = original(self, operation_name, api_params)
        LOG.calls.append(f"{self.meta.service_model.service_name}:{operation_name}")
        if operation_name in ("Query", "Scan"):
            LOG.items_read += int(response.get("ScannedCount", 0))
        elif operation_name == "GetItem":
            LOG.items_read += 1 if response.get("Item") else 0
        elif operation_name == "BatchGetItem":
            LOG.items_read += sum(len(v) for v in response.get("Responses", {}).values())
        return response

    BaseClient._make_api_call = counted
    try:
        yield
    finally:
        BaseClient._make_api_call = original


def _setup() -> tuple[Any, str]:
    """moto with the template's tables and state machine; the API handler's environment."""
    import boto3

    from local.provision import create_state_machines, create_tables
    from local.template import load_template

    template = load_template(REPOSITORY / "template.yaml")
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    create_tables(template, dynamodb)
    arns = create_state_machines(template, boto3.client("stepfunctions", region_name="us-east-1"))
    environment = dict(template.functions["TasksApiFunction"].environment)
    environment["STATE_MACHINE_ARN"] = arns["TaskWorkflow"]
    for key, value in environment.items():
        os.environ[key] = str(value)
    os.environ["IMPORT_ALLOW_LOOPBACK"] = "true"
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    return dynamodb, str(environment["TASKS_TABLE"])


def _fill(
    dynamodb: Any, table_name: str, slots: str, start: int, count: int, rng: random.Random
) -> list[str]:
    """Write ``count`` tasks as TasksTable would; returns the ids written."""
    from imagetasks.adapters.tasks_table import TasksTable
    from imagetasks.domain.tasks import TaskStatus, TaskType, new_task

    table = TasksTable(table_name, slots, client=dynamodb)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    far = int((datetime.now(UTC) + timedelta(days=3650)).timestamp())
    ids: list[str] = []
    batch: list[dict[str, Any]] = []
    for n in range(start, start + count):
        created = base + timedelta(seconds=n * 7 + rng.randrange(5))
        task = new_task(
            TaskType(rng.choice(TYPES)),
            {"import_from": f"https://images.source.invalid/{n}.qcow2"},
            rng.choice(OWNERS),
            created,
        )
        status = TaskStatus(rng.choice(STATUSES))
        changes: dict[str, Any] = {
            "status": status,
            "updated_at": created + timedelta(seconds=rng.randrange(3600)),
        }
        if status.is_final:
            changes["expires_at"] = far - rng.randrange(86400 * 30)
        task = task.model_copy(update=changes)
        ids.append(task.id)
        for op in table._write_ops(task, {}):
            batch.append({"PutRequest": {"Item": op["Put"]["Item"]}})
            if len(batch) == 25:
                _batch_write(dynamodb, table_name, batch)
                batch = []
    if batch:
        _batch_write(dynamodb, table_name, batch)
    return ids


def _batch_write(dynamodb: Any, table_name: str, batch: list[dict[str, Any]]) -> None:
    pending: dict[str, Any] = {table_name: batch}
    while pending:
        pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def _requests(task_id: str, marker: str) -> list[tuple[str, str, str, dict[str, str] | None, str]]:
    """(name, method, path, query, roles) of every measured request."""
    create = "POST"
    requests: list[tuple[str, str, str, dict[str, str] | None, str]] = [
        ("create", create, "/v2/tasks", None, "member"),
        ("show", "GET", f"/v2/tasks/{task_id}", None, "member"),
    ]
    for key in SORT_KEYS:
        for direction in ("asc", "desc"):
            query = {"sort_key": key, "sort_dir": direction, "limit": str(LIMIT)}
            requests.append((f"list sort {key} {direction}", "GET", "/v2/tasks", query, "member"))
    requests += [
        ("list status=success", "GET", "/v2/tasks", {"status": "success", "limit": str(LIMIT)}, "member"),
        ("list type=convert", "GET", "/v2/tasks", {"type": "convert", "limit": str(LIMIT)}, "member"),
        ("list owner (admin)", "GET", "/v2/tasks", {"owner": OTHER, "limit": str(LIMIT)}, "admin"),
        (
            "list status+type",
            "GET",
            "/v2/tasks",
            {"status": "failure", "type": "import", "limit": str(LIMIT)},
            "member",
        ),
        ("list all projects (admin)", "GET", "/v2/tasks", {"limit": str(LIMIT)}, "admin"),
        ("list with marker", "GET", "/v2/tasks", {"marker": marker, "limit": str(LIMIT)}, "member"),
    ]
    return requests


def run(quick: bool) -> dict[str, Any]:
    import warnings

    from moto import mock_aws

    warnings.filterwarnings("ignore", message="No application metrics to publish")

    from tests.support import api_event, call, load_event, load_handler

    sizes = (200, 1000) if quick else (1000, 10_000, 50_000)
    # Calls and items read are deterministic (the same on every repeat); moto's query time grows
    # with the table (it scans and sorts in Python), so the large tables get one pass.
    repeats_at = {sizes[0]: 2 if quick else 3}
    rng = random.Random(8)
    import json

    create_body = json.loads(load_event("tasks_api_create_import.json")["body"])
    # The canonical event's host does not resolve here: a loopback source (allowed below) instead,
    # so create does its real checks without DNS.
    create_body["input"]["import_from"] = "http://127.0.0.1/cirros.qcow2"
    per_size: dict[int, dict[str, Any]] = {}
    fill_seconds: dict[int, float] = {}
    import resource

    # moto holds ~40 KB per item and copies the table on every index query: cap this process so a
    # 50,000-task table cannot take the shared machine's memory (a MemoryError fails the section).
    cap = 16 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    with mock_aws():
        dynamodb, table_name = _setup()
        slots = os.environ.get("SLOTS_TABLE", "task-slots")
        handler = load_handler("tasks_api")
        written = 0
        for size in sizes:
            start = time.perf_counter()
            _fill(dynamodb, table_name, slots, written, size - written, rng)
            fill_seconds[size] = time.perf_counter() - start
            written = size
            say(f"  filled to {size} tasks in {fill_seconds[size]:.0f} s (moto)")
            first = call(handler, api_event("GET", "/v2/tasks", query={"limit": str(LIMIT)}, project=CALLER))[
                "json"
            ]["tasks"]
            task_id, marker = first[0]["id"], first[-1]["id"]
            results: dict[str, Any] = {}
            with counting():
                for name, method, path, query, roles in _requests(task_id, marker):
                    calls: list[int] = []
                    reads: list[int] = []
                    seconds: list[float] = []
                    ops: list[str] = []
                    returned = 0
                    for _ in range(repeats_at.get(size, 1)):
                        event = api_event(
                            method,
                            path,
                            body=create_body if method == "POST" else None,
                            query=query,
                            project=CALLER,
                            roles=roles,
                        )
                        LOG.reset()
                        t0 = time.perf_counter()
                        response = call(handler, event)
                        seconds.append(time.perf_counter() - t0)
                        if response["statusCode"] not in (200, 201):
                            raise RuntimeError(f"{name}: {response['statusCode']} {response.get('body')}")
                        calls.append(len(LOG.calls))
                        reads.append(LOG.items_read)
                        ops = list(LOG.calls)
                        body = response.get("json") or {}
                        returned = len(body.get("tasks", [])) if "tasks" in body else 1
                    results[name] = {
                        "aws_calls": calls,
                        "items_read": reads,
                        "operations": ops,
                        "returned": returned,
                        "moto_ms": summary([s * 1000 for s in seconds]),
                    }
            per_size[size] = results
            for name, r in results.items():
                say(f"  {size} tasks: {name}: calls {r['aws_calls']}, items read {r['items_read']}")
    return _report(per_size, fill_seconds, sizes)


def _report(
    per_size: dict[int, dict[str, Any]], fill_seconds: dict[int, float], sizes: tuple[int, ...]
) -> dict[str, Any]:
    names = list(per_size[sizes[0]])
    rows = []
    constant = True
    list_ok = True
    worst_list = 0
    for name in names:
        cells = [name]
        call_counts: set[int] = set()
        for size in sizes:
            r = per_size[size][name]
            reads, returned = max(r["items_read"]), r["returned"]
            cells.append(f"{max(r['aws_calls'])} / {reads}")
            call_counts.add(max(r["aws_calls"]))
            # Reads must follow what the page returns (plus a marker's GetItem), never the table.
            if reads > returned + 1:
                constant = False
            if name.startswith("list"):
                worst_list = max(worst_list, reads)
                if reads > LIMIT + 1:
                    list_ok = False
        if len(call_counts) != 1:
            constant = False
        last = per_size[sizes[-1]][name]
        cells.append(" / ".join(str(per_size[s][name]["returned"]) for s in sizes))
        cells.append(", ".join(sorted(set(last["operations"]))))
        cells.append(fmt(last["moto_ms"], " ms", 0))
        rows.append(cells)
    show = per_size[sizes[-1]]["show"]
    show_calls = max(max(per_size[s]["show"]["aws_calls"]) for s in sizes)
    targets = [
        verdict(
            "calls and items read constant in table size",
            f"{sum(1 for r in rows)} requests at {', '.join(str(s) for s in sizes)} tasks: "
            + ("same calls, reads <= returned + 1" if constant else "they grow (see table)"),
            f"the {sizes[0]}-task table",
            1.0 if constant else None,
            "same calls at every size; items read <= rows returned + 1",
            constant,
        ),
        verdict(
            "list reads about `limit` items",
            f"worst list page read {worst_list} items for limit={LIMIT}",
            f"limit={LIMIT}",
            worst_list / LIMIT,
            "<= limit + 1 (a marker's GetItem)",
            list_ok,
        ),
        verdict(
            "show is one call",
            f"{show_calls} call(s): {', '.join(show['operations'])}",
            "1 GetItem",
            float(show_calls),
            "1 AWS call",
            show_calls == 1,
        ),
    ]
    columns = ["request"] + [f"{s} tasks: calls / items read" for s in sizes]
    columns += ["rows returned", f"operations ({sizes[-1]} tasks)", f"moto time ({sizes[-1]} tasks)"]
    return {
        "limit": LIMIT,
        "fill_seconds": {str(k): round(v, 1) for k, v in fill_seconds.items()},
        "per_size": {str(k): v for k, v in per_size.items()},
        "targets": targets,
        "tables": [
            {"title": "AWS calls / DynamoDB items read per request", "columns": columns, "rows": rows}
        ],
        "notes": [
            f"Tasks spread over {len(OWNERS)} projects, {len(STATUSES)} statuses and {len(TYPES)} types; "
            f"the caller is {CALLER} (member) or an admin for the owner filter; limit={LIMIT}.",
            "Each task is written as TasksTable._write_ops builds it (main item + index rows), with "
            "batch_write_item. Fill time on moto: "
            + ", ".join(f"{k} tasks {v:.0f} s" for k, v in fill_seconds.items())
            + " (cumulative fills).",
            "calls = every AWS API call the handler made (botocore); items read = Query ScannedCount "
            "+ 1 per GetItem hit. Create also starts the workflow (Step Functions StartExecution).",
            "Requests were repeated 3 times at the smallest size and once at the larger ones: the "
            "counts are identical on every repeat.",
            "moto time is moto's, which scans in Python (it grows with the table; DynamoDB does not): "
            "it is shown for completeness, not as a target.",
        ],
    }
