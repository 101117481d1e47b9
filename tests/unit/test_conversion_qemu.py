"""The qemu-img adapter against the real qemu-img (and a stand-in that fails), and work dirs."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from imagetasks.adapters.qemu import QemuImg
from imagetasks.conversion import Workspaces
from imagetasks.domain.failures import TaskFailure
from tests.image_corpus import MiB, make_qcow2, make_raw, require_qemu_img


@pytest.fixture(autouse=True)
def _qemu() -> None:
    require_qemu_img()


def fake_qemu_img(directory: Path, stderr: str, exit_code: int = 1, sleep: float = 0) -> QemuImg:
    script = directory / "qemu-img"
    script.write_text(f"#!/bin/sh\nsleep {sleep}\necho '{stderr}' >&2\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return QemuImg(str(script), env=dict(os.environ))


def test_convert_qcow2_to_raw_keeps_the_disk_contents(tmp_path: Path) -> None:
    raw = make_raw(tmp_path)
    qcow2 = tmp_path / "from-raw.qcow2"
    back = tmp_path / "back.raw"
    qemu = QemuImg()

    qemu.convert(raw, "raw", qcow2, "qcow2", timeout=60)
    qemu.convert(qcow2, "qcow2", back, "raw", timeout=60)

    assert qemu.info(qcow2, "qcow2")["format"] == "qcow2"
    assert hashlib.sha512(back.read_bytes()).digest() == hashlib.sha512(raw.read_bytes()).digest()


def test_convert_passes_subformat_options(tmp_path: Path) -> None:
    out = tmp_path / "out.vmdk"

    QemuImg().convert(make_qcow2(tmp_path), "qcow2", out, "vmdk", 60, ("subformat=streamOptimized",))

    info = QemuImg().info(out, "vmdk")
    assert info["format"] == "vmdk" and info["virtual-size"] == MiB
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"


def test_info_without_a_format_probes(tmp_path: Path) -> None:
    assert QemuImg().info(make_qcow2(tmp_path))["format"] == "qcow2"


def test_a_qemu_img_error_is_a_task_failure_with_its_first_line(tmp_path: Path) -> None:
    not_qcow2 = make_raw(tmp_path)

    with pytest.raises(TaskFailure) as failed:
        QemuImg().convert(not_qcow2, "qcow2", tmp_path / "out.raw", "raw", 60)

    assert failed.value.message.startswith("qemu-img could not convert the image: Could not open")
    assert "qemu-img: " not in failed.value.message
    assert not (tmp_path / "out.raw").exists()


def test_a_failing_qemu_img_says_what_it_said(tmp_path: Path) -> None:
    qemu = fake_qemu_img(tmp_path, "qemu-img: error while writing at byte 0: No space left on device\nmore")

    with pytest.raises(TaskFailure) as failed:
        qemu.convert(tmp_path / "a", "raw", tmp_path / "b", "qcow2", 10)

    assert failed.value.message == (
        "qemu-img could not convert the image: error while writing at byte 0: No space left on device"
    )


def test_a_stuck_qemu_img_is_killed_at_the_timeout(tmp_path: Path) -> None:
    qemu = fake_qemu_img(tmp_path, "never", exit_code=0, sleep=30)
    started = time.monotonic()

    with pytest.raises(TaskFailure, match="within 1 seconds"):
        qemu.convert(tmp_path / "a", "raw", tmp_path / "b", "qcow2", timeout=1)

    assert time.monotonic() - started < 10


def test_a_workspace_is_removed_after_use_and_leftovers_of_a_dead_process_go(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / f"{dead.pid}-old-task-1234"
    leftover.mkdir()
    (leftover / "source.raw").write_bytes(b"x" * 10)
    earlier_run = tmp_path / f"{os.getpid()}-killed-task-5678"  # this process, no task running
    earlier_run.mkdir()
    foreign = tmp_path / "someone-elses"
    foreign.mkdir()
    workspaces = Workspaces()

    with workspaces.open(tmp_path, "task-a") as first, workspaces.open(tmp_path, "task-b") as second:
        (first / "data").write_bytes(b"1")
        assert not leftover.exists() and not earlier_run.exists()
        assert first.exists() and second.exists()  # a sibling's open never removes a live workspace

    assert list(tmp_path.iterdir()) == [foreign]


def test_a_workspace_is_removed_when_the_work_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), Workspaces().open(tmp_path, "task") as work:
        (work / "data").write_bytes(b"1")
        raise RuntimeError("boom")

    assert list(tmp_path.iterdir()) == []
