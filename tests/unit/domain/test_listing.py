"""List requests: Glance's parameter rules, partitions and sort values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagetasks.domain import clock
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.listing import MAX_LIMIT, SortDir, parse_list_request
from imagetasks.domain.tasks import (
    TASK_LIST_SPEC,
    TaskStatus,
    TaskType,
    new_task,
    task_filter_values,
    task_sort_values,
)

ALLOWED = {"status": [s.value for s in TaskStatus], "type": [t.value for t in TaskType]}


def parse(**params: str) -> object:
    return parse_list_request(params, TASK_LIST_SPEC, ALLOWED)


def test_defaults_are_created_at_descending_25() -> None:
    request = parse()

    assert (request.sort_key, request.sort_dir, request.limit, request.marker) == (
        "created_at",
        SortDir.DESC,
        25,
        None,
    )


def test_limit_is_capped_silently_and_zero_is_allowed() -> None:
    assert parse(limit="100000").limit == MAX_LIMIT
    assert parse(limit="0").limit == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "1.5"}, "limit param must be an integer"),
        ({"limit": "-3"}, "limit param must be positive"),
        ({"marker": "abc"}, "Invalid marker format"),
        ({"sort_dir": "sideways"}, "Invalid sort direction: sideways"),
        ({"sort_key": "size"}, "Sort key supplied was not valid."),
        ({"status": "queued"}, "Invalid status value: queued"),
        ({"type": "copy"}, "Invalid type value: copy"),
    ],
)
def test_bad_parameters_have_glances_messages(params: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse(**params)

    assert refused.value.message == message


def test_a_task_belongs_to_eight_partitions_one_per_scope_and_filter_subset() -> None:
    task = new_task(TaskType.EXPORT, {}, "p1")

    partitions = TASK_LIST_SPEC.partitions_of("p1", task_filter_values(task))

    assert sorted(partitions.values()) == sorted(
        [
            "p#p1", "p#p1#status#pending", "p#p1#type#export", "p#p1#status#pending#type#export",
            "a", "a#status#pending", "a#type#export", "a#status#pending#type#export",
        ]
    )  # fmt: skip
    assert TASK_LIST_SPEC.partition("p1", {"type": "export", "status": "pending"}) == (
        "p.status.type",
        "p#p1#status#pending#type#export",
    )
    assert TASK_LIST_SPEC.partition(None, {}) == ("a", "a")


def test_sort_values_order_by_the_key_then_created_at_then_id() -> None:
    moment = datetime(2026, 11, 25, tzinfo=UTC)
    older = new_task(TaskType.IMPORT, {}, "p1", moment)
    same_second = new_task(TaskType.IMPORT, {}, "p1", moment + timedelta(microseconds=10))
    failed = older.transition(TaskStatus.FAILURE, moment, timedelta(hours=1), message="m")

    assert task_sort_values(older)["created_at"] < task_sort_values(same_second)["created_at"]
    assert task_sort_values(failed)["status"] < task_sort_values(same_second)["status"]  # failure < pending
    assert task_sort_values(same_second)["expires_at"].startswith("~")  # no expiry sorts last ascending
    assert task_sort_values(failed)["expires_at"] < task_sort_values(same_second)["expires_at"]


def test_datetimes_show_seconds_and_keep_microseconds_in_storage() -> None:
    moment = datetime(2026, 11, 25, 10, 0, 0, 987654, tzinfo=UTC)

    assert clock.to_api(moment) == "2026-11-25T10:00:00Z"
    assert clock.to_stored(moment) == "2026-11-25T10:00:00.987654Z"
    assert clock.from_stored(clock.to_stored(moment)) == moment
    assert clock.epoch_to_api(int(moment.timestamp())) == "2026-11-25T10:00:00Z"


def test_a_second_sort_key_or_direction_for_tasks_is_a_400_not_dropped() -> None:
    for name, values in (("sort_key", ["created_at", "updated_at"]), ("sort_dir", ["asc", "desc"])):
        with pytest.raises(InvalidRequest, match=f"give one {name}"):
            parse_list_request({name: values[-1]}, TASK_LIST_SPEC, ALLOWED, {name: values})


def test_the_same_sort_key_given_twice_is_one_sort_key() -> None:
    request = parse_list_request(
        {"sort_key": "updated_at"}, TASK_LIST_SPEC, ALLOWED, {"sort_key": ["updated_at", "updated_at"]}
    )

    assert request.sort_key == "updated_at"
