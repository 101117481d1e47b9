"""Following a task to its end with long polls, and the transfer rate seen on the way.

`follow` asks once for the task as it is, then `GET ?wait=20` again and again: the service answers
as soon as the status or progress changes, so a change is shown within moments and an idle task
costs one request every 20 s. It never changes the task: stopping it (Ctrl-C) leaves the task running.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .tasks import MAX_WAIT_SECONDS, ServiceUnavailable, Task, TasksClient

#: Seconds of samples the rate is measured over: long enough to be steady, short enough to follow a change.
RATE_WINDOW_SECONDS = 30.0


@dataclass(frozen=True)
class Observation:
    task: Task
    elapsed: float  # seconds since watching began
    rate: float | None  # bytes per second in the current step, None until it can be told


class RateMeter:
    """Bytes per second within a step, over the last `window` seconds; each step starts over."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self.step: str | None = None
        self.samples: deque[tuple[float, int]] = deque()

    def sample(self, step: str, bytes_done: int, at: float) -> float | None:
        if step != self.step or (self.samples and bytes_done < self.samples[-1][1]):
            self.step = step
            self.samples.clear()
        self.samples.append((at, bytes_done))
        while len(self.samples) > 2 and at - self.samples[1][0] >= self.window:
            self.samples.popleft()
        first_at, first_bytes = self.samples[0]
        if at <= first_at:
            return None
        return (bytes_done - first_bytes) / (at - first_at)


def _state(task: Task) -> tuple[object, ...]:
    return (task.status, task.progress)


def follow(
    client: TasksClient,
    task_id: str,
    on_change: Callable[[Observation], None],
    *,
    wait: int = MAX_WAIT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    min_poll_seconds: float = 2.0,
    retries: int = 5,
) -> Task:
    """Calls `on_change` with the task as first seen and at each change of status or progress;
    returns the finished task. A 404 is raised at once; a 5xx, 429 or lost connection is tried
    again `retries` times in a row (1, 2, 4... s apart) before it is raised."""
    started = clock()
    meter = RateMeter()
    seen: tuple[object, ...] | None = None
    failures = 0
    while True:
        asked = clock()
        try:
            task = client.get(task_id, wait=None if seen is None else wait)
        except ServiceUnavailable:
            failures += 1
            if failures > retries:
                raise
            sleep(min(2.0 ** (failures - 1), 10.0))
            continue
        failures = 0
        now = clock()
        long_poll, changed = seen is not None, _state(task) != seen
        if changed:
            seen = _state(task)
            rate = None
            if task.progress is not None:
                rate = meter.sample(task.progress.step, task.progress.bytes_done, now)
            on_change(Observation(task=task, elapsed=now - started, rate=rate))
        if task.is_final:
            return task
        # A server that ignores `wait` (plain Glance) answers at once, unchanged: poll it gently instead.
        if long_poll and not changed and now - asked < min_poll_seconds:
            sleep(min_poll_seconds - (now - asked))
