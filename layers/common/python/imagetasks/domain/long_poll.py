"""Long-polling a task: answer as soon as what a poller watches (status, progress) changes.

Plain Python: the caller gives the read (a consistent read of the task, NotFound when it is gone),
the clock and the pause, so that tests drive the loop without waiting.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.tasks import Task

MAX_WAIT_SECONDS = 20  # with a 30 s Lambda timeout and API Gateway's 29 s limit, 20 s always fits
POLL_INTERVAL_SECONDS = 0.5  # one consistent GetItem (half a read unit) per poll
_WAIT = re.compile(r"[0-9]{1,3}")
WAIT_MESSAGE = f"wait must be a whole number of seconds from 1 to {MAX_WAIT_SECONDS}"


def parse_wait(value: str | None) -> int | None:
    """The `wait` query parameter: None when absent, else 1..MAX_WAIT_SECONDS (InvalidRequest otherwise)."""
    if value is None:
        return None
    if not _WAIT.fullmatch(value) or not 1 <= int(value) <= MAX_WAIT_SECONDS:
        raise InvalidRequest(f"{WAIT_MESSAGE}; got {value[:40]!r}.")
    return int(value)


def watched(task: Task) -> tuple[str, object]:
    """What a poller waits to see change."""
    return task.status.value, task.progress


def wait_for_change(
    read: Callable[[], Task],
    seconds: float,
    *,
    interval: float = POLL_INTERVAL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Task:
    """The task as soon as its status or progress differs from the first read's, else after `seconds`
    the task as it is then. A final task never changes again, so it is answered at once."""
    first = read()
    if first.status.is_final:
        return first
    seen = watched(first)
    deadline = monotonic() + seconds
    current = first
    while (left := deadline - monotonic()) > 0:
        sleep(min(interval, left))
        current = read()
        if watched(current) != seen or current.status.is_final:
            return current
    return current
