"""A running task's progress figures and how seldom they are written (a fake clock, no timing)."""

from __future__ import annotations

from typing import Any

import pytest

from imagetasks.domain.progress import MiB, ProgressReporter, snapshot


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reporter(total: int | None, clock: FakeClock) -> tuple[ProgressReporter, list[dict[str, Any]]]:
    written: list[dict[str, Any]] = []
    return ProgressReporter(
        "fetch", total, written.append, clock=clock, interval=5, step_bytes=64 * MiB
    ), written


def test_the_snapshot_has_the_apis_fields() -> None:
    assert snapshot("fetch", 25, 100) == {
        "step": "fetch",
        "bytes_done": 25,
        "bytes_total": 100,
        "percent": 25,
    }
    assert snapshot("fetch", 25, None)["percent"] is None


def test_it_writes_every_interval_not_on_every_chunk() -> None:
    clock = FakeClock()
    progress, written = reporter(1000, clock)
    progress.start()
    for _ in range(10):  # ten chunks within one interval: no write
        clock.now += 0.4
        progress.feed(b"x" * 10)
    assert len(written) == 1
    clock.now += 1.1  # 5.1 s since the start
    progress.feed(b"x" * 10)
    assert written[-1] == {"step": "fetch", "bytes_done": 110, "bytes_total": 1000, "percent": 11}


def test_64_mib_moved_writes_sooner_but_never_twice_a_second() -> None:
    clock = FakeClock()
    progress, written = reporter(None, clock)
    progress.feed(b"\0" * (64 * MiB))  # 64 MiB at once, but within the same second: not yet
    assert written == []
    clock.now += 1.0
    progress.feed(b"")
    assert written[-1]["bytes_done"] == 64 * MiB and written[-1]["percent"] is None


def test_the_last_figures_are_written_at_the_end_with_the_total_known() -> None:
    clock = FakeClock()
    progress, written = reporter(None, clock)
    progress.feed(b"x" * 300)
    progress.finish()
    assert written[-1] == {"step": "fetch", "bytes_done": 300, "bytes_total": 300, "percent": 100}


def test_a_figure_set_from_outside_is_written_every_interval_even_when_it_stalls() -> None:
    # Given a step measured by a percentage (qemu-img), not by chunks
    clock = FakeClock()
    progress, written = reporter(1000, clock)
    progress.start()

    # When its figure moves within an interval, then stalls past it
    progress.advance_to(400)
    clock.now += 5.0
    progress.advance_to(400)
    clock.now += 1.0
    progress.advance_to(400)
    clock.now += 4.0
    progress.advance_to(400)

    # Then it was written once per interval only: a stalled step still checks its task every 5 s
    assert [w["bytes_done"] for w in written] == [0, 400, 400]
    assert written[-1]["percent"] == 40


def test_a_write_that_finds_the_task_ended_stops_the_step() -> None:
    # Given a step whose task ends after its first write (the table then refuses the write)
    class TaskEnded(Exception):
        pass

    ended = False
    written: list[dict[str, Any]] = []

    def write(figures: dict[str, Any]) -> None:
        if ended:
            raise TaskEnded(figures["step"])
        written.append(figures)

    clock = FakeClock()
    progress = ProgressReporter("upload", 10, write, clock=clock, interval=5)
    progress.start()
    ended = True

    # When chunks pass within the interval, then past it
    progress.feed(b"x")
    clock.now += 5
    with pytest.raises(TaskEnded, match="upload"):
        progress.feed(b"x")

    # Then only the start was written, and the refusal reached the step at the next write
    assert written == [{"step": "upload", "bytes_done": 0, "bytes_total": 10, "percent": 0}]
