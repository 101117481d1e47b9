"""Following a task with long polls, on a clock the test moves, and how it reads on a terminal and in a log."""

from __future__ import annotations

import io

import pytest
from imagetasks_client import render
from imagetasks_client.tasks import ServiceUnavailable, Task, TaskNotFound, TasksClient
from imagetasks_client.watch import Observation, RateMeter, follow

from tests.client_support import TASK_ID, FakeTasksApi, MiB, error, progress, task_json


class FakeClock:
    """Time moves only when the fake API answers (`step` s a request) or the code sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class TimedApi(FakeTasksApi):
    def __init__(self, clock: FakeClock, seconds_per_answer: float = 4.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.clock = clock
        self.seconds_per_answer = seconds_per_answer

    def request(self, method, path, *, params=None, json=None):  # type: ignore[no-untyped-def]
        self.clock.now += self.seconds_per_answer
        return super().request(method, path, params=params, json=json)


def an_import_of_8_mib() -> list[dict]:
    return [
        task_json(status="pending"),
        task_json(progress=progress("fetch", 0, 8 * MiB)),
        task_json(progress=progress("fetch", 2 * MiB, 8 * MiB)),
        task_json(progress=progress("fetch", 6 * MiB, 8 * MiB)),
        task_json(
            status="success", progress=progress("fetch", 8 * MiB, 8 * MiB), result={"image_id": "img-1"}
        ),
    ]


def test_follow_asks_once_then_long_polls_until_the_end_reporting_each_state() -> None:
    # Given an import that changes at each long poll, 4 s apart
    clock = FakeClock()
    api = TimedApi(clock, lives={TASK_ID: an_import_of_8_mib()})
    seen: list[Observation] = []

    # When it is followed
    final = follow(TasksClient(api), TASK_ID, seen.append, clock=clock, sleep=clock.sleep)

    # Then the first request shows it as it is, every later one is a 20 s long poll, and nothing sleeps
    assert final.status == "success"
    assert [params for _, _, params, _ in api.requests] == [{}] + [{"wait": "20"}] * 4
    assert clock.slept == []
    # each state is reported once, with the rate of its step so far (2 MiB in 4 s, then 6 MiB in 8 s)
    assert [o.task.status for o in seen] == ["pending", "processing", "processing", "processing", "success"]
    assert [o.rate for o in seen[1:4]] == [None, 2 * MiB / 4, 6 * MiB / 8]
    assert seen[-1].elapsed == pytest.approx(20.0)


def test_an_unchanged_answer_is_not_reported_again() -> None:
    clock = FakeClock()
    same = task_json(progress=progress("fetch", MiB, 8 * MiB))
    api = TimedApi(
        clock, seconds_per_answer=20, lives={TASK_ID: [same, dict(same), task_json(status="success")]}
    )
    seen: list[Observation] = []

    follow(TasksClient(api), TASK_ID, seen.append, clock=clock, sleep=clock.sleep)

    assert [o.task.status for o in seen] == ["processing", "success"]


def test_a_server_that_ignores_wait_is_polled_every_two_seconds_not_hammered() -> None:
    # Given a Glance-like server: answers at once, ignoring ?wait, and the task changes only later
    clock = FakeClock()
    same = task_json()
    api = TimedApi(
        clock,
        seconds_per_answer=0.1,
        lives={TASK_ID: [same, dict(same), dict(same), task_json(status="success")]},
    )

    follow(TasksClient(api), TASK_ID, lambda o: None, clock=clock, sleep=clock.sleep)

    # Then each unchanged quick answer is followed by a pause making up two seconds
    assert clock.slept == [pytest.approx(1.9), pytest.approx(1.9)]


def test_outages_are_retried_with_backoff_and_a_lasting_one_is_raised() -> None:
    clock = FakeClock()
    api = TimedApi(
        clock,
        outages=[error(503, "busy"), error(502, "bad gateway")],
        lives={TASK_ID: [task_json(status="success")]},
    )

    final = follow(TasksClient(api), TASK_ID, lambda o: None, clock=clock, sleep=clock.sleep)

    assert final.status == "success" and clock.slept == [1.0, 2.0]

    lasting = TimedApi(clock, outages=[error(503, "down")] * 10, lives={TASK_ID: [task_json()]})
    with pytest.raises(ServiceUnavailable, match="down"):
        follow(TasksClient(lasting), TASK_ID, lambda o: None, clock=clock, sleep=clock.sleep, retries=3)
    assert len(lasting.requests) == 4


def test_an_unknown_task_is_raised_at_once() -> None:
    clock = FakeClock()
    with pytest.raises(TaskNotFound):
        follow(TasksClient(TimedApi(clock)), TASK_ID, lambda o: None, clock=clock, sleep=clock.sleep)
    assert clock.slept == []


def test_the_rate_starts_over_with_each_step_and_forgets_samples_older_than_its_window() -> None:
    meter = RateMeter(window=30)

    assert meter.sample("download", 0, at=0) is None
    assert meter.sample("download", 10 * MiB, at=10) == MiB
    assert meter.sample("convert", 0, at=11) is None  # a new step starts from nothing
    assert meter.sample("convert", 5 * MiB, at=16) == MiB
    # after the window, the rate is that of the last 30 s (then 3 MiB/s), not since the step began
    meter.sample("convert", 35 * MiB, at=46)
    assert meter.sample("convert", 125 * MiB, at=76) == pytest.approx((125 - 35) * MiB / 30)


def observation(
    status: str = "processing", elapsed: float = 12, rate: float | None = MiB, **fields: object
) -> Observation:
    return Observation(task=Task.from_json(task_json(status=status, **fields)), elapsed=elapsed, rate=rate)


def test_plain_lines_say_time_step_bytes_percent_and_rate() -> None:
    stream = io.StringIO()
    lines = render.renderer_for(stream)

    lines(observation(status="pending", rate=None))
    lines(observation(progress=progress("fetch", 3 * MiB, 12 * MiB)))
    lines(observation(progress=progress("fetch", 3 * MiB, None), elapsed=3725))

    assert stream.getvalue().splitlines() == [
        "[0:12] pending",
        "[0:12] processing: fetch 3.0 MiB / 12.0 MiB (25%), 1.0 MiB/s, 0:09 left",
        "[1:02:05] processing: fetch 3.0 MiB, 1.0 MiB/s",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_redrawn_in_place_and_a_new_line_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "120")  # the bar is cut to the terminal's width: wide enough for all of it
    stream = Terminal()
    bar = render.renderer_for(stream)

    bar(observation(progress=progress("download", 4 * MiB, 8 * MiB)))
    bar(observation(progress=progress("download", 8 * MiB, 8 * MiB)))
    bar(observation(progress=progress("convert", MiB, 4 * MiB), rate=None))
    bar.close()

    drawn = stream.getvalue()
    assert drawn.count("\r\x1b[2K") == 3 and drawn.endswith("\n")
    first_step, second_step = drawn.rstrip("\n").split("\n")
    assert first_step.rsplit("\r\x1b[2K", 1)[-1].split() == [
        "download",
        "[########################]",
        "100%",
        "8.0",
        "MiB",
        "/",
        "8.0",
        "MiB",
        "1.0",
        "MiB/s",
    ]
    assert "[############------------]   50%  4.0 MiB / 8.0 MiB  1.0 MiB/s, 0:04 left" in first_step
    assert second_step.endswith("convert   [######------------------]   25%  1.0 MiB / 4.0 MiB")


def test_outcomes_name_the_image_the_export_or_the_error_code_and_message() -> None:
    imported = Task.from_json(task_json(status="success", result={"image_id": "img-1"}))
    exported = Task.from_json(
        task_json(
            status="success",
            type="export",
            result={
                "bucket": "b",
                "key": "p/t/i.raw",
                "size": 3 * MiB,
                "url": "https://s3/x",
                "url_expires_at": "T",
            },
        )
    )
    failed = Task.from_json(
        task_json(status="failure", error_code="image_rejected", message="Image data is qcow2")
    )

    assert render.outcome_lines(imported) == [f"Task {TASK_ID} succeeded: image img-1"]
    assert render.outcome_lines(exported) == [
        f"Task {TASK_ID} succeeded: exported to s3://b/p/t/i.raw (3.0 MiB)",
        "Download (until T): https://s3/x",
    ]
    assert render.outcome_lines(failed) == [f"Task {TASK_ID} failed", "image_rejected: Image data is qcow2"]
