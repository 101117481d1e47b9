"""The qemu-img adapter against the real qemu-img (and a stand-in that fails), and work dirs."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagetasks.adapters.qemu import QemuImg
from imagetasks.domain.conversion import SOURCE_FORMATS
from imagetasks.domain.failures import TaskFailure
from imagetasks.services.convert_export import Workspaces
from tests.image_corpus import (
    HOST_SECRET,
    LoopbackListener,
    MiB,
    make_host_secret,
    make_qcow2,
    make_qcow2_backing_file,
    make_qcow2_data_file,
    make_raw,
    make_vdi,
    make_vhd,
    make_vhdx,
    make_vmdk_capacity_zero,
    make_vmdk_create_type_case,
    make_vmdk_parent,
    make_vmdk_parent_host_file,
    make_vmdk_stream_optimized,
    wait_for,
)

pytestmark = pytest.mark.qemu_img  # skipped where qemu-img is not installed


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


def test_data_that_is_not_its_format_is_refused_before_qemu_img_runs(tmp_path: Path) -> None:
    not_qcow2 = make_raw(tmp_path)

    with pytest.raises(TaskFailure) as failed:
        QemuImg().convert(not_qcow2, "qcow2", tmp_path / "out.raw", "raw", 60)

    assert failed.value.message == (
        "The image cannot be converted: it is qcow2 and its qcow2 header is missing or truncated"
    )
    assert not (tmp_path / "out.raw").exists()


def test_a_failing_qemu_img_says_what_it_said(tmp_path: Path) -> None:
    qemu = fake_qemu_img(tmp_path, "qemu-img: Could not create output: Permission denied\nmore")

    with pytest.raises(TaskFailure) as failed:
        qemu.convert(make_raw(tmp_path), "raw", tmp_path / "b", "qcow2", 10)

    assert (
        failed.value.message
        == "qemu-img could not convert the image: Could not create output: Permission denied"
    )


def test_a_stuck_qemu_img_is_killed_at_the_timeout(tmp_path: Path) -> None:
    # A qemu-img that never ends on its own, and says which process it is
    pid_file = tmp_path / "pid"
    script = tmp_path / "qemu-img"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    qemu = QemuImg(str(script), env=dict(os.environ))

    with pytest.raises(TaskFailure, match="within 1 seconds"):
        qemu.convert(make_raw(tmp_path), "raw", tmp_path / "b", "qcow2", timeout=1)

    # The call returned, and the process is gone (killed and reaped), not left running
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


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


# ------------------------------------------------------------------ hostile images
# Each case is shown three ways: qemu-img alone (as it used to be called) does follow the image
# into the host, which proves the test can see it; the adapter refuses the image before running
# qemu-img; and the adapter's qemu-img command line holds by itself when that check is bypassed.


@pytest.fixture
def listener() -> Iterator[LoopbackListener]:
    running = LoopbackListener()
    yield running
    running.close()


def plain_qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    """qemu-img as the adapter used to call it: a file name and ``-f``."""
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=60, check=False)


def holds_secret(path: Path) -> bool:
    return path.exists() and HOST_SECRET in path.read_bytes()


def test_a_qcow2_backing_file_on_the_host_is_never_read(tmp_path: Path) -> None:
    secret_backed = tmp_path / "secret-backed.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-f",
            "qcow2",
            "-b",
            str(make_host_secret(tmp_path)),
            "-F",
            "raw",
            str(secret_backed),
        ],
        check=True,
        capture_output=True,
    )
    plain, checked, bypassed = tmp_path / "plain.raw", tmp_path / "checked.raw", tmp_path / "bypassed.raw"

    assert (
        plain_qemu_img("convert", "-f", "qcow2", "-O", "raw", str(secret_backed), str(plain)).returncode == 0
    )
    assert holds_secret(plain)  # qemu-img alone copies the host file into the image
    with pytest.raises(TaskFailure, match="it is qcow2 and it has a backing file"):
        QemuImg().convert(secret_backed, "qcow2", checked, "raw", 60)
    assert not checked.exists()
    QemuImg()._convert_checked(secret_backed, "qcow2", bypassed, "raw", 60)
    assert bypassed.read_bytes() == b"\0" * MiB  # the disk without its backing file: nothing read


def test_a_vmdk_parent_on_the_host_is_never_read(tmp_path: Path) -> None:
    image = make_vmdk_parent_host_file(tmp_path)  # parentFileNameHint = a VMDK holding the secret
    plain, checked, bypassed = tmp_path / "plain.raw", tmp_path / "checked.raw", tmp_path / "bypassed.raw"

    assert plain_qemu_img("convert", "-f", "vmdk", "-O", "raw", str(image), str(plain)).returncode == 0
    assert holds_secret(plain)
    with pytest.raises(TaskFailure, match=r"it is vmdk and its descriptor names a parent image"):
        QemuImg().convert(image, "vmdk", checked, "raw", 60)
    assert not checked.exists()
    QemuImg()._convert_checked(image, "vmdk", bypassed, "raw", 60)
    assert bypassed.read_bytes() == b"\0" * MiB


def test_a_vmdk_parent_on_the_network_is_never_connected_to(
    tmp_path: Path, listener: LoopbackListener
) -> None:
    image = make_vmdk_parent(tmp_path, f"nbd://127.0.0.1:{listener.port}")

    plain_qemu_img("convert", "-f", "vmdk", "-O", "raw", str(image), str(tmp_path / "plain.raw"))
    wait_for(lambda: listener.connections > 0)  # qemu-img alone connects where the hint says
    listener.connections = 0
    with pytest.raises(TaskFailure, match="its descriptor names a parent image"):
        QemuImg().convert(image, "vmdk", tmp_path / "checked.raw", "raw", 60)
    with pytest.raises(TaskFailure, match="its descriptor names a parent image"):
        QemuImg().info(image, "vmdk")
    QemuImg()._convert_checked(image, "vmdk", tmp_path / "bypassed.raw", "raw", 60)
    time.sleep(0.5)
    assert listener.connections == 0


@pytest.mark.parametrize(
    "make", [make_vmdk_create_type_case, make_vmdk_capacity_zero], ids=lambda f: f.__name__
)
def test_vmdk_extents_outside_the_file_are_refused_before_qemu_img_runs(
    make: Callable[..., Path], tmp_path: Path, listener: LoopbackListener
) -> None:
    # qemu opens a descriptor's extents by name, and no option can stop it (extents.N cannot be
    # pinned on a single-file VMDK): the check before every run is what keeps them out.
    (tmp_path / "host").mkdir()
    (tmp_path / "network").mkdir()
    on_host = make(tmp_path / "host")  # the extent: host-secret.raw, next to the image
    on_network = make(tmp_path / "network", extent=f"nbd:127.0.0.1:{listener.port}")
    plain = tmp_path / "plain.raw"

    assert plain_qemu_img("convert", "-f", "vmdk", "-O", "raw", str(on_host), str(plain)).returncode == 0
    assert holds_secret(plain)  # a file next to the image; "nbd:host:port" needs no "/" either
    for image in (on_host, on_network):
        output = image.parent / "checked.raw"
        with pytest.raises(TaskFailure, match="it is vmdk and "):
            QemuImg().convert(image, "vmdk", output, "raw", 60)
        assert not output.exists()
    time.sleep(0.5)
    assert listener.connections == 0


def test_a_qcow2_external_data_file_is_refused_before_qemu_img_runs(tmp_path: Path) -> None:
    # qemu opens the data file the header names whatever the options say ("data-file": null is
    # ignored): the check before every run keeps it out.
    with pytest.raises(TaskFailure, match="it has an external data file"):
        QemuImg().convert(make_qcow2_data_file(tmp_path), "qcow2", tmp_path / "out.raw", "raw", 60)


def test_raw_data_is_only_ever_bytes_whatever_header_it_carries(tmp_path: Path) -> None:
    # A qcow2 with a backing file, declared raw: qemu-img must copy its bytes, not open it.
    image = make_qcow2_backing_file(tmp_path)
    out = tmp_path / "out.raw"

    QemuImg().convert(image, "raw", out, "raw", 60)

    assert out.read_bytes()[: image.stat().st_size] == image.read_bytes()


def recording_qemu_img(directory: Path) -> tuple[QemuImg, Path]:
    """A stand-in that writes its arguments, one per line, and succeeds."""
    record = directory / "args.txt"
    script = directory / "record-qemu-img"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\nprintf "{{}}"\n')
    script.chmod(0o755)
    return QemuImg(str(script), env=dict(os.environ)), record


@pytest.mark.parametrize("fmt", sorted(set(SOURCE_FORMATS.values())))
def test_every_source_format_is_opened_as_one_pinned_file_without_backing(fmt: str, tmp_path: Path) -> None:
    qemu, record = recording_qemu_img(tmp_path)
    source = make_raw(tmp_path)

    qemu._convert_checked(source, fmt, tmp_path / "out.qcow2", "qcow2", 60)
    args = record.read_text().splitlines()

    assert args[:4] == ["convert", "-p", "-O", "qcow2"] and "-f" not in args
    assert args[-1] == str(tmp_path / "out.qcow2")
    assert args[-2].startswith("json:")
    assert json.loads(args[-2].removeprefix("json:")) == {
        "driver": fmt,
        "backing": None,
        "file": {"driver": "file", "filename": str(source)},
    }
    qemu.info(source, "raw")
    assert record.read_text().splitlines() == ["info", "--output=json", args[-2].replace(f'"{fmt}"', '"raw"')]


@pytest.mark.parametrize(
    ("make", "fmt"),
    [
        (make_raw, "raw"),
        (make_qcow2, "qcow2"),
        (make_vmdk_stream_optimized, "vmdk"),
        (make_vhd, "vpc"),
        (make_vhdx, "vhdx"),
        (make_vdi, "vdi"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_the_pinned_spec_reads_every_format_qemu_img_7_2_converts(
    make: Callable[[Path], Path], fmt: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.raw"

    QemuImg().convert(make(tmp_path), fmt, out, "raw", 60)

    assert out.stat().st_size >= MiB  # vhd rounds the disk up to its geometry


def test_relative_paths_named_like_protocols_stay_local_files(
    tmp_path: Path, listener: LoopbackListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = Path(f"nbd:127.0.0.1:{listener.port}")
    source.write_bytes(make_raw(tmp_path).read_bytes())
    output = Path(f"nbd:127.0.0.1:{listener.port}.out")

    QemuImg().convert(source, "raw", output, "qcow2", 60)

    assert (tmp_path / output.name).exists()
    time.sleep(0.5)
    assert listener.connections == 0


# ------------------------------------------------------------------ messages
def test_qemu_img_messages_never_show_the_workers_paths_or_process(tmp_path: Path) -> None:
    work = tmp_path / "imagetasks-work" / "4242-8f9a6c1e-0d1b-4a4e-9c57-6f3c1e2d9b70-1a2b3c4d"
    work.mkdir(parents=True)
    source = work / "source.qcow2"
    source.write_bytes(make_raw(tmp_path).read_bytes())  # not a qcow2: qemu-img names the file

    with pytest.raises(TaskFailure) as failed:
        QemuImg()._convert_checked(source, "qcow2", work / "output.raw", "raw", 60)

    message = failed.value.message
    assert (
        message
        == "qemu-img could not convert the image: Could not open the image: Image is not in qcow2 format"
    )
    assert str(tmp_path) not in message and "4242" not in message and "json:" not in message


def test_unknown_paths_in_a_message_are_hidden_and_known_failures_explained(tmp_path: Path) -> None:
    qemu = fake_qemu_img(
        tmp_path,
        "qemu-img: warning: something minor\\n"
        "qemu-img: error while writing at byte 4096 to /tmp/imagetasks-work/77-task-1/output.vdi: "
        "No space left on device",
    )

    with pytest.raises(TaskFailure) as failed:
        qemu.convert(make_raw(tmp_path), "raw", tmp_path / "b", "vdi", 10)

    assert failed.value.message == (
        "qemu-img could not convert the image: error while writing at byte 4096 to a file of the worker: "
        "No space left on device (the converted image does not fit in the worker's working space)"
    )
