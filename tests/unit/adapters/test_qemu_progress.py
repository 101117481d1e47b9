"""qemu-img convert's progress: its -p output parsed, reported, and a refusal that kills it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagetasks.adapters.qemu import ProgressParser, QemuImg
from tests.image_corpus import make_raw, require_qemu_img
from tests.support import processes_gone


class TaskEnded(Exception):
    """What a progress write raises once the task is no longer processing."""


def test_the_percentage_is_read_from_pieces_of_any_size() -> None:
    # Given qemu-img -p's output, cut wherever a pipe read happens to end
    output = b"    (0.00/100%)\r    (12.50/100%)\r    (100.00/100%)\r\n"
    parser = ProgressParser()

    # When it arrives three bytes at a time
    seen = [parser.feed(output[i : i + 3]) for i in range(0, len(output), 3)]

    # Then every entry is read once complete, never a half-read one ("(1" of "(12.50")
    assert sorted(set(seen)) == [0.0, 12.5, 100.0]
    assert seen == sorted(seen)
    assert parser.percent == 100.0


def test_output_that_is_not_a_percentage_changes_nothing() -> None:
    parser = ProgressParser()

    assert parser.feed(b"    (40.00/100%)\r") == 40.0
    assert parser.feed(b"warning: something\n(x/100%)\r(250/100%)\r") == 100.0  # capped, never over


def test_a_real_conversion_reports_up_to_100_percent(tmp_path: Path) -> None:
    # Given a real qemu-img and a raw image
    require_qemu_img()
    seen: list[float] = []

    # When it converts with a progress callback
    QemuImg().convert(make_raw(tmp_path), "raw", tmp_path / "out.qcow2", "qcow2", 60, on_progress=seen.append)

    # Then the callback heard it rise to 100 % (qemu-img writes -p output to a pipe too)
    assert seen and seen[-1] == 100.0 and seen == sorted(seen)
    assert (tmp_path / "out.qcow2").stat().st_size > 0


def test_a_refused_progress_write_kills_qemu_img_and_removes_its_output(tmp_path: Path) -> None:
    # Given a qemu-img that starts writing its output, says 10 %, then works on (a child too)
    pids = tmp_path / "pids"
    script = tmp_path / "slow-qemu-img"
    script.write_text(
        "#!/bin/sh\n"
        'for output; do :; done\nprintf half > "$output"\n'
        f"sleep 60 &\necho $$ $! > {pids}\n"
        "printf '    (0.00/100%%)\\r    (10.00/100%%)\\r'\n"
        "wait\n"
    )
    script.chmod(0o755)
    output = tmp_path / "out.qcow2"
    seen: list[float] = []

    def write_progress(percent: float) -> None:
        seen.append(percent)
        if percent >= 10:
            raise TaskEnded("the task was cancelled")

    # When the progress write at 10 % finds the task ended
    with pytest.raises(TaskEnded):
        QemuImg(str(script), env=dict(os.environ)).convert(
            make_raw(tmp_path), "raw", output, "qcow2", 60, on_progress=write_progress
        )

    # Then qemu-img and what it started are gone, and so is its half-written output
    shell, child = (int(pid) for pid in pids.read_text().split())
    assert seen[-1] == 10.0
    assert processes_gone([shell, child])
    assert not output.exists()
