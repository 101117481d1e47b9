"""A running task's progress: how far its step is, written seldom enough to cost little.

`ProgressReporter` watches the bytes a step moves (it is a chunk observer of the staging stream)
and hands a snapshot to `write` at most every `interval` seconds — sooner once `step_bytes` more
bytes have passed, but never more than once a second. `write` is the tasks table's conditional
update: when the task is no longer `processing` (cancelled, timed out, reconciled), it raises
`TaskNotProcessing`, which stops the step within one interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

MiB = 1024 * 1024
DEFAULT_INTERVAL_SECONDS = 5.0
DEFAULT_STEP_BYTES = 64 * MiB
MIN_SECONDS_BETWEEN_WRITES = 1.0

#: The `step` of a task's progress. An import fetches its source into staging; a convert (and an
#: export to another format, and an import the deployment converts) downloads the image into the
#: worker's working space, converts it with qemu-img (bytes of the virtual disk gone through) and
#: uploads the result; an export in the image's own format copies it from bucket to bucket.
STEPS = ("fetch", "download", "convert", "upload", "copy")


def snapshot(step: str, bytes_done: int, bytes_total: int | None) -> dict[str, Any]:
    """The `progress` object of the task API."""
    percent = None
    if bytes_total:
        percent = min(100, int(bytes_done * 100 / bytes_total))
    return {"step": step, "bytes_done": bytes_done, "bytes_total": bytes_total, "percent": percent}


class ProgressReporter:
    def __init__(
        self,
        step: str,
        bytes_total: int | Callable[[], int | None] | None,
        write: Callable[[dict[str, Any]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        step_bytes: int = DEFAULT_STEP_BYTES,
    ) -> None:
        self.step = step
        self.bytes_total = bytes_total
        self.bytes_done = 0
        self._write = write
        self._clock = clock
        self._interval = interval
        self._step_bytes = step_bytes
        self._last_time = clock()
        self._last_bytes = 0
        self.writes = 0

    def start(self) -> None:
        """Say the step began (0 bytes): also the first check that the task still runs."""
        self._report()

    def feed(self, chunk: bytes) -> None:
        self.advance_to(self.bytes_done + len(chunk))

    def advance_to(self, bytes_done: int) -> None:
        """Where the step is now, for work measured otherwise than by chunks passing (qemu-img's
        percentage); called with the same figure again, it still writes once the interval passed,
        so a step whose figures stall keeps learning whether its task still runs."""
        self.bytes_done = bytes_done
        elapsed = self._clock() - self._last_time
        moved = self.bytes_done - self._last_bytes
        if elapsed >= self._interval or (moved >= self._step_bytes and elapsed >= MIN_SECONDS_BETWEEN_WRITES):
            self._report()

    def finish(self) -> None:
        """The last figures of the step (kept on the task once it ends): the total is what passed."""
        self.bytes_total = self.bytes_done
        self._report()

    def total(self) -> int | None:
        """The expected total, when known (a callable is asked each time: it may learn it late)."""
        return self.bytes_total() if callable(self.bytes_total) else self.bytes_total

    def _report(self) -> None:
        self._write(snapshot(self.step, self.bytes_done, self.total()))
        self.writes += 1
        self._last_time = self._clock()
        self._last_bytes = self.bytes_done
