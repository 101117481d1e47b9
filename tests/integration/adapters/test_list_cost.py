"""A list page reads about `limit` items whatever the table holds: counted, not timed."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.auth.identity import Caller
from imagetasks.domain.listing import ListRequest, SortDir
from imagetasks.domain.tasks import TASK_LIST_SPEC, Task, TaskStatus, TaskType, new_task
from local.provision import create_tables
from tests.support import CallCounter

TASKS = 2000
OWNERS = ("p1", "p2", "p3", "p4")
LIMIT = 20


def finished(task: Task, moment: datetime, status: TaskStatus) -> Task:
    if status is TaskStatus.PENDING:
        return task
    processing = task.transition(TaskStatus.PROCESSING, moment, timedelta(hours=48))
    if status is TaskStatus.PROCESSING:
        return processing
    return processing.transition(
        status, moment + timedelta(seconds=5), timedelta(hours=48), result={}, message="x"
    )


@pytest.fixture(scope="module")
def filled_table(local_template: Any) -> Any:
    """A table holding TASKS tasks across owners, types and statuses, written in batches."""
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("dynamodb")
        create_tables(local_template, client)
        names = {logical: spec.name for logical, spec in local_template.tables.items()}
        table = TasksTable(names["TasksTable"], names["TaskSlotsTable"], client)
        rng = random.Random(7)
        start = datetime(2026, 11, 1, tzinfo=UTC)
        items = []
        for number in range(TASKS):
            moment = start + timedelta(seconds=number)
            task = new_task(rng.choice(list(TaskType)), {"n": number}, rng.choice(OWNERS), moment)
            task = finished(task, moment, rng.choice(list(TaskStatus)))
            items += [op["Put"]["Item"] for op in table._write_ops(task, {})]
        for batch in (items[i : i + 25] for i in range(0, len(items), 25)):
            client.batch_write_item(
                RequestItems={names["TasksTable"]: [{"PutRequest": {"Item": item}} for item in batch]}
            )
        yield table, client


REQUESTS = [
    (caller, sort_key, direction, filters, owner)
    for caller in ("member", "admin")
    for sort_key in TASK_LIST_SPEC.sort_keys
    for direction in (SortDir.ASC, SortDir.DESC)
    for filters, owner in (
        ({}, None),
        ({"status": "success"}, None),
        ({"type": "import"}, None),
        ({"status": "failure", "type": "export"}, None),
        ({}, "p2"),
    )
    if owner is None or caller == "admin"  # a member's owner filter only ever shows its own tasks
]


@pytest.mark.parametrize(("who", "sort_key", "direction", "filters", "owner"), REQUESTS)
def test_every_list_request_is_one_query_reading_about_limit_items(
    filled_table: Any, who: str, sort_key: str, direction: SortDir, filters: dict[str, str], owner: str | None
) -> None:
    table, client = filled_table
    caller = Caller(project_id="p1", user_id="u", roles=("admin",) if who == "admin" else ("member",))
    now = datetime(2026, 11, 2, tzinfo=UTC)  # before any expires_at: nothing is hidden
    first = table.list(
        caller,
        ListRequest(limit=LIMIT, sort_key=sort_key, sort_dir=direction, filters=filters, owner=owner),
        now,
    )
    counter = CallCounter(client)

    page = table.list(
        caller,
        ListRequest(
            limit=LIMIT,
            sort_key=sort_key,
            sort_dir=direction,
            filters=filters,
            owner=owner,
            marker=first[-1]["task_id"],
        ),
        now,
    )

    assert len(page) == LIMIT
    assert counter.calls == ["GetItem", "Query"]  # the marker's task, then one page
    assert table.last_page.stats.items_read == LIMIT
    assert all(filters.get("status", row["status"]) == row["status"] for row in page)
    assert all(filters.get("type", row["type"]) == row["type"] for row in page)
    expected_owner = owner if who == "admin" and owner else (None if who == "admin" else "p1")
    assert expected_owner is None or {row["owner"] for row in page} == {expected_owner}
    assert {row["task_id"] for row in page}.isdisjoint({row["task_id"] for row in first})


def test_a_page_is_sorted_with_ties_broken_by_created_at_then_id(filled_table: Any) -> None:
    table, _ = filled_table
    caller = Caller(project_id="p1", user_id="u", roles=("admin",))

    page = table.list(
        caller,
        ListRequest(limit=200, sort_key="status", sort_dir=SortDir.ASC),
        datetime(2026, 11, 2, tzinfo=UTC),
    )

    keys = [(row["status"], row["created_at"], row["task_id"]) for row in page]
    assert keys == sorted(keys)


def test_show_is_one_call(filled_table: Any) -> None:
    table, client = filled_table
    some_id = table.list(
        Caller(project_id="p1", user_id="u"),
        ListRequest(limit=1, sort_key="created_at"),
        datetime(2026, 11, 2, tzinfo=UTC),
    )[0]["task_id"]
    counter = CallCounter(client)

    table.get_visible(some_id, Caller(project_id="p1", user_id="u"), datetime(2026, 11, 2, tzinfo=UTC))

    assert counter.calls == ["GetItem"]


@pytest.mark.parametrize(
    ("who", "filters"), [("member", {}), ("admin", {}), ("member", {"status": "success"})]
)
def test_the_id_filter_reads_one_index_row(filled_table: Any, who: str, filters: dict[str, str]) -> None:
    table, client = filled_table
    caller = Caller(project_id="p1", user_id="u", roles=("admin",) if who == "admin" else ("member",))
    now = datetime(2026, 11, 2, tzinfo=UTC)
    wanted = table.list(caller, ListRequest(limit=1, sort_key="created_at", filters=filters), now)[0]
    counter = CallCounter(client)

    page = table.list(
        caller, ListRequest(sort_key="created_at", filters=filters, record_id=wanted["task_id"]), now
    )

    assert [row["task_id"] for row in page] == [wanted["task_id"]]
    assert counter.calls == ["GetItem"]
    assert table.last_page.stats.items_read == 1


def test_the_id_filter_with_a_marker_is_two_reads_and_honours_the_order(filled_table: Any) -> None:
    table, client = filled_table
    caller = Caller(project_id="p1", user_id="u")
    now = datetime(2026, 11, 2, tzinfo=UTC)
    older, newer = reversed(table.list(caller, ListRequest(limit=2, sort_key="created_at"), now))
    counter = CallCounter(client)

    after_newer = table.list(
        caller, ListRequest(sort_key="created_at", marker=newer["task_id"], record_id=older["task_id"]), now
    )
    after_older = table.list(
        caller, ListRequest(sort_key="created_at", marker=older["task_id"], record_id=newer["task_id"]), now
    )

    assert [row["task_id"] for row in after_newer] == [older["task_id"]]  # descending: older comes after
    assert after_older == []
    assert counter.calls == ["GetItem", "GetItem"] * 2


def test_the_id_filter_shows_nothing_that_the_other_filters_exclude(filled_table: Any) -> None:
    table, _ = filled_table
    member = Caller(project_id="p1", user_id="u")
    now = datetime(2026, 11, 2, tzinfo=UTC)
    foreign = table.list(
        Caller(project_id="p2", user_id="u"), ListRequest(limit=1, sort_key="created_at"), now
    )[0]
    own = table.list(member, ListRequest(limit=1, sort_key="created_at"), now)[0]
    other_status = next(s.value for s in TaskStatus if s.value != own["status"])

    assert table.list(member, ListRequest(sort_key="created_at", record_id=foreign["task_id"]), now) == []
    assert (
        table.list(
            member,
            ListRequest(sort_key="created_at", filters={"status": other_status}, record_id=own["task_id"]),
            now,
        )
        == []
    )
    assert table.list(member, ListRequest(sort_key="created_at", record_id=f"in:{own['task_id']}"), now) == []
