"""How a task's progress and outcome read: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import json
import shutil
from typing import TextIO

from .tasks import Progress, Task
from .watch import Observation

BAR_WIDTH = 24
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: float) -> str:
    value = float(count)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_summary(progress: Progress) -> str:
    """`fetch 12.0 MiB / 24.0 MiB (50%)`; the total is left out when the source did not say it."""
    done = human_bytes(progress.bytes_done)
    if progress.bytes_total is None:
        return f"{progress.step} {done}"
    summary = f"{progress.step} {done} / {human_bytes(progress.bytes_total)}"
    return summary if progress.percent is None else f"{summary} ({progress.percent}%)"


def bar(percent: int | None, width: int = BAR_WIDTH) -> str:
    if percent is None:
        return "[" + "?" * width + "]"
    filled = max(0, min(width, width * percent // 100))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _rate_and_eta(task: Task, progress: Progress, rate: float | None) -> str:
    if rate is None or task.is_final:  # a finished task's rate is no longer news
        return ""
    text = f"{human_bytes(rate)}/s"
    if rate > 0 and progress.bytes_total is not None and progress.bytes_total > progress.bytes_done:
        text += f", {human_duration((progress.bytes_total - progress.bytes_done) / rate)} left"
    return text


def status_line(observation: Observation) -> str:
    """One line for a non-terminal: `[0:12] processing: fetch 12.0 MiB / 24.0 MiB (50%), 1.0 MiB/s`."""
    task = observation.task
    text = f"[{human_duration(observation.elapsed)}] {task.status}"
    if task.progress is not None:
        text += f": {progress_summary(task.progress)}"
        rate = _rate_and_eta(task, task.progress, observation.rate)
        if rate:
            text += f", {rate}"
    return text


def bar_line(observation: Observation) -> str:
    """The terminal's line: `fetch    [######------]  50%  12.0 MiB / 24.0 MiB  1.0 MiB/s, 0:12 left`."""
    task = observation.task
    progress = task.progress
    if progress is None or task.status == "pending":
        return f"{task.status} ({human_duration(observation.elapsed)})"
    percent = "" if progress.percent is None else f"{progress.percent:3d}%"
    amount = human_bytes(progress.bytes_done)
    if progress.bytes_total is not None:
        amount += f" / {human_bytes(progress.bytes_total)}"
    parts = [
        f"{progress.step:<8}",
        bar(progress.percent),
        percent,
        amount,
        _rate_and_eta(task, progress, observation.rate),
    ]
    return "  ".join(part for part in parts if part)


class LineRenderer:
    """A line for each change: for logs, pipes and CI."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, observation: Observation) -> None:
        self.stream.write(status_line(observation) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class BarRenderer:
    """One line redrawn in place; a new line when the step changes, so each step's last state stays."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.step: str | None = None
        self.open = False

    def __call__(self, observation: Observation) -> None:
        step = observation.task.progress.step if observation.task.progress else None
        if self.open and step != self.step:
            self.stream.write("\n")
        self.step = step
        width = shutil.get_terminal_size((100, 24)).columns
        line = bar_line(observation)[: max(20, width - 1)]
        self.stream.write(
            "\r\x1b[2K" + line
        )  # carriage return, then erase the line: shorter lines leave no tail
        self.stream.flush()
        self.open = True

    def close(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


def renderer_for(stream: TextIO) -> LineRenderer | BarRenderer:
    isatty = getattr(stream, "isatty", None)
    return BarRenderer(stream) if isatty is not None and isatty() else LineRenderer(stream)


def outcome_lines(task: Task) -> list[str]:
    """What a finished task came to: its result, or `error_code: message`."""
    if task.status == "failure":
        return [f"Task {task.id} failed", f"{task.error_code or 'failure'}: {task.message or '(no message)'}"]
    result = dict(task.result or {})
    if task.type == "export" and result.get("url"):
        where = f"s3://{result.get('bucket')}/{result.get('key')}"
        size = f" ({human_bytes(result['size'])})" if isinstance(result.get("size"), int) else ""
        lines = [f"Task {task.id} succeeded: exported to {where}{size}"]
        until = f" (until {result['url_expires_at']})" if result.get("url_expires_at") else ""
        return [*lines, f"Download{until}: {result['url']}"]
    if result.get("image_id"):
        return [f"Task {task.id} succeeded: image {result['image_id']}"]
    return (
        [f"Task {task.id} succeeded", json.dumps(result, sort_keys=True)]
        if result
        else [f"Task {task.id} succeeded"]
    )
