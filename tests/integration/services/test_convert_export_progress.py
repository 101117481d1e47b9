"""Convert and export progress on moto: the phases a task reports, and a task that ends (cancelled)
during each phase stops there and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator

from imagetasks.adapters.qemu import QemuImg
from imagetasks.domain.failures import TaskFailure
from imagetasks.domain.tasks import TaskStatus, TaskType
from tests.image_corpus import make_qcow2
from tests.integration.services.test_convert_export import Stack, assert_nothing_left
from tests.support import api_event, call, fail_task, load_handler, processes_gone

CANCELLED = "The task was cancelled by user u1 of project project-a."


pytestmark = pytest.mark.qemu_img  # skipped where qemu-img is not installed


@pytest.fixture
def stack(aws: dict[str, str], tmp_path: Path) -> Stack:
    stack = Stack(aws, tmp_path / "work")
    for kind in ("convert", "export"):
        service = stack.service(kind)
        # Every figure written: the tests see each phase's first figures without waiting 5 s.
        service.settings = service.settings.model_copy(update={"progress_interval_seconds": 0})
    return stack


def record_steps(
    stack: Stack, kind: str, monkeypatch: pytest.MonkeyPatch, fail_at: str | None = None
) -> list[dict[str, Any]]:
    """The progress figures the step writes; with `fail_at`, the task fails (as a cancel's
    reconciler makes it) just before the first write of that phase with work done in it."""
    tasks = stack.service(kind).tasks
    real = tasks.record_progress
    written: list[dict[str, Any]] = []

    def record(task_id: str, figures: dict[str, Any]) -> None:
        written.append(figures)
        if figures["step"] == fail_at and (fail_at != "convert" or figures["bytes_done"] > 0):
            fail_task(stack.tasks, task_id, CANCELLED)
        real(task_id, figures)

    monkeypatch.setattr(tasks, "record_progress", record)
    return written


def steps_of(written: list[dict[str, Any]]) -> list[str]:
    return [
        step for i, step in enumerate(w["step"] for w in written) if i == 0 or written[i - 1]["step"] != step
    ]


@pytest.mark.parametrize(
    ("kind", "task_input", "steps"),
    [
        ("convert", {"disk_format": "raw"}, ["download", "convert", "upload"]),
        ("export", {"disk_format": "vhdx"}, ["download", "convert", "upload"]),
        ("export", {}, ["copy"]),  # same format: streamed from bucket to bucket
    ],
    ids=["convert", "export-converted", "export-copy"],
)
def test_each_phase_reports_its_progress_and_the_last_figures_stay(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    task_input: dict[str, Any],
    steps: list[str],
) -> None:
    # Given an image and a task on it
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType(kind), {"image_id": source.id, **task_input})
    written = record_steps(stack, kind, monkeypatch)

    # When the step runs
    result = stack.run(kind, task_id)

    # Then it reported its phases in order, each from 0, and the task keeps the upload's last figures
    assert steps_of(written) == steps
    for step in steps:
        first = next(w for w in written if w["step"] == step)
        assert first["bytes_done"] == 0 and first["bytes_total"] is not None
    download = [w for w in written if w["step"] == "download"]
    assert not download or download[0]["bytes_total"] == source.size
    converting = [w for w in written if w["step"] == "convert"]
    assert (
        not converting or converting[-1]["bytes_done"] == converting[-1]["bytes_total"] == source.virtual_size
    )
    task = stack.tasks.get(task_id)
    assert task is not None and task.progress is not None
    size = result["size"] if kind == "export" else stack.images.get(result["image_id"]).size  # type: ignore[union-attr]
    assert task.progress == {"step": steps[-1], "bytes_done": size, "bytes_total": size, "percent": 100}


def test_glance_task_show_gets_the_progress_the_served_schema_describes(
    aws: dict[str, str], stack: Stack, tmp_path: Path
) -> None:
    # Given a finished export of an image to another format
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType.EXPORT, {"image_id": source.id, "disk_format": "vhdx"})
    stack.run("export", task_id)
    api = load_handler("tasks_api")
    api.tasks_table.cache_clear()

    # When a client reads the task and the task schema (as glance task-show does)
    shown = call(api, api_event("GET", f"/v2/tasks/{task_id}", project="project-a"))["json"]
    schema = call(api, api_event("GET", "/v2/schemas/task"))["json"]

    # Then progress is there, valid against the served schema, whose steps are named
    assert shown["progress"]["step"] == "upload" and shown["progress"]["percent"] == 100
    Draft4Validator(schema).validate(shown)
    assert set(schema["properties"]["progress"]["properties"]["step"]["enum"]) >= {
        "download",
        "convert",
        "upload",
        "copy",
    }


def slow_qemu_img(directory: Path) -> tuple[QemuImg, Path]:
    """A qemu-img that starts its output, says 5 %, and would then work for a minute."""
    pids = directory / "qemu-img.pids"
    script = directory / "slow-qemu-img"
    script.write_text(
        "#!/bin/sh\n"
        'for output; do :; done\nprintf half > "$output"\n'
        f"sleep 60 &\necho $$ $! > {pids}\n"
        "printf '    (0.00/100%%)\\r    (5.00/100%%)\\r'\n"
        "wait\n"
    )
    script.chmod(0o755)
    return QemuImg(str(script)), pids


@pytest.mark.parametrize(
    ("kind", "task_input", "phase"),
    [
        ("convert", {"disk_format": "raw"}, "download"),
        ("convert", {"disk_format": "raw"}, "convert"),
        ("convert", {"disk_format": "raw"}, "upload"),
        ("export", {"disk_format": "vhdx"}, "download"),
        ("export", {"disk_format": "vhdx"}, "convert"),
        ("export", {"disk_format": "vhdx"}, "upload"),
        ("export", {}, "copy"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_task_cancelled_during_a_phase_stops_there_and_leaves_nothing(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    task_input: dict[str, Any],
    phase: str,
) -> None:
    # Given a task whose task record ends (cancelled) while the step is in `phase`
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType(kind), {"image_id": source.id, **task_input})
    written = record_steps(stack, kind, monkeypatch, fail_at=phase)
    pids = None
    if phase == "convert":
        stack.service(kind).qemu, pids = slow_qemu_img(tmp_path)

    # When the step runs on
    with pytest.raises(TaskFailure, match="no longer processing"):
        stack.run(kind, task_id)

    # Then it stopped in that phase: no later phase began, a running qemu-img was killed, and no
    # image, file, multipart upload or working directory is left; the cancellation stands
    assert written[-1]["step"] == phase
    if pids is not None:
        assert processes_gone([int(pid) for pid in pids.read_text().split()])
    assert_nothing_left(stack, task_id, source)
    task = stack.tasks.get(task_id)
    assert task is not None and task.status is TaskStatus.FAILURE
    assert task.message == CANCELLED and task.result is None
