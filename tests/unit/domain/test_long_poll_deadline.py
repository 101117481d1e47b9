"""The long-poll loop on a fake clock: what ends a wait, and what it answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.long_poll import parse_wait, wait_for_change
from imagetasks.domain.tasks import Task, TaskStatus, TaskType

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def task(status: TaskStatus = TaskStatus.PROCESSING, progress: dict[str, Any] | None = None) -> Task:
    return Task(
        id="t1",
        type=TaskType.IMPORT,
        status=status,
        input={},
        owner="p",
        progress=progress,
        created_at=NOW,
        updated_at=NOW,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_an_unchanged_task_is_read_every_half_second_until_the_wait_is_over() -> None:
    clock, reads = FakeClock(), []

    def read() -> Task:
        reads.append(clock.now)
        return task()

    answer = wait_for_change(read, 2, sleep=clock.sleep, monotonic=clock.monotonic)

    assert answer == task()
    assert reads == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_the_wait_ends_at_the_first_read_that_sees_new_progress() -> None:
    clock = FakeClock()
    answers = iter([task(), task(), task(progress={"percent": 10}), task(progress={"percent": 20})])

    answer = wait_for_change(lambda: next(answers), 20, sleep=clock.sleep, monotonic=clock.monotonic)

    assert answer.progress == {"percent": 10}
    assert clock.pauses == [0.5, 0.5]


def test_a_final_task_is_answered_without_waiting() -> None:
    clock = FakeClock()
    answer = wait_for_change(
        lambda: task(TaskStatus.SUCCESS), 20, sleep=clock.sleep, monotonic=clock.monotonic
    )
    assert answer.status is TaskStatus.SUCCESS and clock.pauses == []


def test_the_last_pause_stops_at_the_deadline() -> None:
    clock = FakeClock()
    wait_for_change(lambda: task(), 1.2, sleep=clock.sleep, monotonic=clock.monotonic)
    assert clock.pauses == pytest.approx([0.5, 0.5, 0.2])


@pytest.mark.parametrize(("value", "seconds"), [(None, None), ("1", 1), ("20", 20), ("007", 7)])
def test_waits_of_1_to_20_seconds_are_read(value: str | None, seconds: int | None) -> None:
    assert parse_wait(value) == seconds


@pytest.mark.parametrize("value", ["0", "21", "1000", "-1", "+5", "2.0", "x", "", "5s"])
def test_other_waits_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequest, match="wait must be a whole number of seconds from 1 to 20"):
        parse_wait(value)
