"""Convert and export tasks through their handlers, on moto, with the real qemu-img."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from imagetasks.adapters.images_table import ImagesTable
from imagetasks.adapters.qemu import QemuImg
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.domain import clock
from imagetasks.domain.failures import TaskFailure
from imagetasks.domain.images import Image, new_image
from imagetasks.domain.tasks import TaskStatus, TaskType, new_task
from imagetasks.services import convert_export as conversion
from imagetasks.services.convert_export import ConversionService
from tests.image_corpus import (
    LoopbackListener,
    MiB,
    file_digests,
    make_qcow2,
    make_qcow2_backing_file,
    make_qcow2_huge_l1,
    make_raw,
    make_vmdk_capacity_zero,
    make_vmdk_parent,
    make_vmdk_stream_optimized,
)
from tests.support import FakeLambdaContext, api_event, call, fail_task, load_handler, start_processing

OWNER = "project-a"


pytestmark = pytest.mark.qemu_img  # skipped where qemu-img is not installed


class Stack:
    """The moto world of one test: handlers, tables, buckets and a few verbs over them."""

    def __init__(self, aws: dict[str, str], work_root: Path) -> None:
        self.aws = aws
        self.s3 = boto3.client("s3")
        self.images = ImagesTable(aws["IMAGES_TABLE"])
        self.tasks = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
        self.handlers: dict[str, ModuleType] = {}
        for kind in ("convert", "export"):
            module = load_handler(f"{kind}_task")
            module.service.cache_clear()
            service: ConversionService = module.service()
            # Each test works in its own directory: other test runs on this machine share /tmp.
            service.settings = service.settings.model_copy(update={"work_root": work_root})
            self.handlers[kind] = module
        self.work_root = work_root

    def created_image_id(self, task_id: str) -> str:
        task = self.tasks.get(task_id)
        assert task is not None
        return task.created_image_id

    def service(self, kind: str) -> ConversionService:
        service: ConversionService = self.handlers[kind].service()
        return service

    def put_image(self, path: Path, disk_format: str, owner: str = OWNER, **changes: Any) -> Image:
        """An image as an import would leave it: its object in the images bucket and its record."""
        image_id = str(uuid.uuid4())
        key = f"images/{image_id}"
        self.s3.put_object(Bucket=self.aws["IMAGES_BUCKET"], Key=key, Body=path.read_bytes())
        md5, sha512 = file_digests(path)
        info = QemuImg().info(path, {"vhd": "vpc"}.get(disk_format, disk_format))
        image = new_image(
            image_id=image_id,
            owner=owner,
            name="source",
            disk_format=disk_format,
            container_format="bare",
            size=path.stat().st_size,
            virtual_size=info["virtual-size"],
            checksum=md5,
            os_hash_value=sha512,
            bucket=self.aws["IMAGES_BUCKET"],
            key=key,
            task_id="import-task",
            properties={"os_distro": "cirros"},
        ).model_copy(update=changes)
        assert self.images.create(image)
        return image

    def new_task(self, task_type: TaskType, task_input: dict[str, Any], owner: str = OWNER) -> str:
        """A task as the workflow hands it to its step: stored, then processing."""
        task = new_task(task_type, task_input, owner)
        self.tasks.create(task)
        start_processing(self.tasks, task)
        return task.id

    def run(self, kind: str, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.handlers[kind].lambda_handler(
            {"step": kind, "task_id": task_id}, FakeLambdaContext()
        )
        return result

    def download(self, bucket: str, key: str, path: Path) -> Path:
        path.write_bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        return path

    def keys(self, bucket_env: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.aws[bucket_env])
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def unfinished_uploads(self) -> list[str]:
        found = []
        for bucket_env in ("IMAGES_BUCKET", "EXPORTS_BUCKET"):
            uploads = self.s3.list_multipart_uploads(Bucket=self.aws[bucket_env]).get("Uploads", [])
            found += [u["Key"] for u in uploads]
        return found

    def image_count(self) -> int:
        scan = boto3.client("dynamodb").scan(TableName=self.aws["IMAGES_TABLE"])
        return sum(1 for item in scan["Items"] if item.get("record", {}).get("S") == "image")


@pytest.fixture
def stack(aws: dict[str, str], tmp_path: Path) -> Stack:
    return Stack(aws, tmp_path / "work")


def qemu_format(path: Path) -> str:
    return str(QemuImg().info(path)["format"])


def sha512_of(path: Path) -> str:
    return file_digests(path)[1]


def assert_nothing_left(stack: Stack, task_id: str, source: Image) -> None:
    assert stack.keys("IMAGES_BUCKET") == [source.key]
    assert stack.keys("EXPORTS_BUCKET") == []
    assert stack.unfinished_uploads() == []
    assert stack.images.get(stack.created_image_id(task_id)) is None
    assert not stack.work_root.exists() or list(stack.work_root.iterdir()) == []


# ------------------------------------------------------------------ convert
def test_convert_qcow2_to_raw_makes_a_new_image_with_its_own_hashes(stack: Stack, tmp_path: Path) -> None:
    qcow2 = make_qcow2(tmp_path)
    disk = tmp_path / "qcow2-source.raw"  # the disk make_qcow2 converted
    source = stack.put_image(qcow2, "qcow2")
    task_id = stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "raw"})

    result = stack.run("convert", task_id)

    new_id = stack.created_image_id(task_id)
    assert result == {"image_id": new_id}
    image = stack.images.get(new_id)
    assert image is not None
    data = stack.download(image.bucket, image.key, tmp_path / "out.raw")
    assert (image.bucket, image.key) == (stack.aws["IMAGES_BUCKET"], f"images/{new_id}")
    assert qemu_format(data) == "raw" and sha512_of(data) == sha512_of(disk)
    assert (image.checksum, image.os_hash_value) == file_digests(data)
    assert (image.disk_format, image.container_format, image.owner) == ("raw", "bare", OWNER)
    assert (image.size, image.virtual_size) == (MiB, MiB)
    assert image.name == "source" and image.properties == {"os_distro": "cirros"}
    assert image.task_ids == (task_id,)
    # The source is untouched, and knows which task worked on it.
    after = stack.images.get(source.id)
    assert after is not None and after.task_ids == ("import-task", task_id)
    assert after.model_dump(exclude={"task_ids", "updated_at"}) == source.model_dump(
        exclude={"task_ids", "updated_at"}
    )
    assert sha512_of(stack.download(source.bucket, source.key, tmp_path / "src")) == source.os_hash_value
    assert list(stack.work_root.iterdir()) == []


def test_convert_raw_to_vmdk_writes_a_stream_optimized_vmdk_of_the_same_disk(
    stack: Stack, tmp_path: Path
) -> None:
    raw = make_raw(tmp_path)
    source = stack.put_image(raw, "raw")
    task_id = stack.new_task(
        TaskType.CONVERT,
        {"image_id": source.id, "disk_format": "vmdk", "name": "for-vmware", "container_format": "ova"},
    )

    stack.run("convert", task_id)

    image = stack.images.get(stack.created_image_id(task_id))
    assert image is not None and image.disk_format == "vmdk" and image.container_format == "ova"
    assert image.name == "for-vmware"
    vmdk = stack.download(image.bucket, image.key, tmp_path / "out.vmdk")
    info = QemuImg().info(vmdk, "vmdk")
    assert info["format"] == "vmdk" and info["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert (image.checksum, image.os_hash_value) == file_digests(vmdk)
    back = tmp_path / "back.raw"
    QemuImg().convert(vmdk, "vmdk", back, "raw", 60)
    assert sha512_of(back) == sha512_of(raw)


def test_a_retried_convert_answers_with_the_image_it_already_made(stack: Stack, tmp_path: Path) -> None:
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "vhdx"})
    first = stack.run("convert", task_id)

    again = stack.run("convert", task_id)

    assert again == first
    assert stack.image_count() == 2


# ------------------------------------------------------------------ export
def test_export_without_format_change_copies_the_image_with_a_download_url(
    stack: Stack, tmp_path: Path
) -> None:
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType.EXPORT, {"image_id": source.id})
    before = clock.now()

    result = stack.run("export", task_id)

    key = f"{OWNER}/{task_id}/{source.id}.qcow2"
    assert {k: v for k, v in result.items() if k not in ("url", "url_expires_at")} == {
        "image_id": source.id,
        "bucket": stack.aws["EXPORTS_BUCKET"],
        "key": key,
        "size": source.size,
        "checksum": source.checksum,
        "os_hash_algo": "sha512",
        "os_hash_value": source.os_hash_value,
        "disk_format": "qcow2",
    }
    exported = stack.download(result["bucket"], key, tmp_path / "exported.qcow2")
    assert file_digests(exported) == (source.checksum, source.os_hash_value)
    url = urlsplit(result["url"])
    assert url.path.endswith(f"/{key}") and "X-Amz-Signature" in parse_qs(url.query)
    assert parse_qs(url.query)["X-Amz-Expires"] == ["3600"]
    expires = datetime.strptime(result["url_expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before + timedelta(minutes=59) <= expires <= clock.now() + timedelta(minutes=61)
    assert stack.keys("IMAGES_BUCKET") == [source.key]  # nothing else written


def test_export_with_a_format_change_writes_the_converted_file(stack: Stack, tmp_path: Path) -> None:
    qcow2 = make_qcow2(tmp_path)
    source = stack.put_image(qcow2, "qcow2")
    task_id = stack.new_task(TaskType.EXPORT, {"image_id": source.id, "disk_format": "vhd"})

    result = stack.run("export", task_id)

    assert result["key"] == f"{OWNER}/{task_id}/{source.id}.vhd" and result["disk_format"] == "vhd"
    exported = stack.download(result["bucket"], result["key"], tmp_path / "exported.vhd")
    assert qemu_format(exported) == "vpc"
    assert (result["checksum"], result["os_hash_value"]) == file_digests(exported)
    assert result["size"] == exported.stat().st_size
    back = tmp_path / "back.raw"
    QemuImg().convert(exported, "vpc", back, "raw", 60)
    disk = back.read_bytes()  # VHD rounds the disk up to a whole cylinder-head-sector geometry
    assert disk[:MiB] == (tmp_path / "qcow2-source.raw").read_bytes() and not disk[MiB:].strip(b"\0")
    assert stack.image_count() == 1  # an export makes no image


def test_two_exports_and_a_convert_of_one_image_at_once_all_succeed(stack: Stack, tmp_path: Path) -> None:
    source = stack.put_image(make_vmdk_stream_optimized(tmp_path), "vmdk")
    jobs = [
        ("export", stack.new_task(TaskType.EXPORT, {"image_id": source.id})),
        ("export", stack.new_task(TaskType.EXPORT, {"image_id": source.id, "disk_format": "qcow2"})),
        ("convert", stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "raw"})),
    ]

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda job: stack.run(*job), jobs))

    assert results[0]["disk_format"] == "vmdk" and results[1]["disk_format"] == "qcow2"
    assert results[2] == {"image_id": stack.created_image_id(jobs[2][1])}
    assert len(stack.keys("EXPORTS_BUCKET")) == 2
    after = stack.images.get(source.id)
    assert after is not None and set(after.task_ids) == {"import-task", *(task_id for _, task_id in jobs)}
    assert list(stack.work_root.iterdir()) == []


# ------------------------------------------------------------------ failures
class DeletingQemuImg(QemuImg):
    """qemu-img that first lets someone delete the source image, the way DELETE /v2/images does."""

    def __init__(self, stack: Stack, image: Image) -> None:
        super().__init__()
        self.stack, self.image = stack, image

    def convert(self, *args: Any, **kwargs: Any) -> None:
        self.stack.images.delete(self.image)
        self.stack.s3.delete_object(Bucket=self.image.bucket, Key=self.image.key)
        super().convert(*args, **kwargs)


@pytest.mark.parametrize(("kind", "target"), [("convert", "raw"), ("export", "raw")])
def test_deleting_the_image_while_a_task_works_on_it_fails_the_task_cleanly(
    stack: Stack, tmp_path: Path, kind: str, target: str
) -> None:
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType(kind), {"image_id": source.id, "disk_format": target})
    stack.service(kind).qemu = DeletingQemuImg(stack, source)

    with pytest.raises(TaskFailure) as failed:
        stack.run(kind, task_id)

    assert failed.value.message == f"Image {source.id} was deleted while the task was working on it"
    assert stack.keys("IMAGES_BUCKET") == [] and stack.keys("EXPORTS_BUCKET") == []
    assert stack.unfinished_uploads() == [] and stack.image_count() == 0


def test_an_image_deleted_before_the_task_starts_fails_it(stack: Stack, tmp_path: Path) -> None:
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType.EXPORT, {"image_id": source.id})
    stack.images.delete(source)

    with pytest.raises(TaskFailure, match=f"Image {source.id} was deleted before the task could read it"):
        stack.run("export", task_id)


def test_an_image_whose_record_outlives_its_data_fails_the_task(stack: Stack, tmp_path: Path) -> None:
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    stack.s3.delete_object(Bucket=source.bucket, Key=source.key)
    task_id = stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "raw"})

    with pytest.raises(TaskFailure, match=f"Image {source.id} was deleted while the task was reading it"):
        stack.run("convert", task_id)


@pytest.mark.parametrize(("kind", "task_input"), [("convert", {"disk_format": "raw"}), ("export", {})])
def test_data_that_no_longer_matches_its_hash_is_refused(
    stack: Stack, tmp_path: Path, kind: str, task_input: dict[str, Any]
) -> None:
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    data = bytearray(stack.s3.get_object(Bucket=source.bucket, Key=source.key)["Body"].read())
    data[-100:] = b"\xff" * 100  # bit rot in the data clusters: the header still parses
    stack.s3.put_object(Bucket=source.bucket, Key=source.key, Body=bytes(data))
    task_id = stack.new_task(TaskType(kind), {"image_id": source.id, **task_input})

    with pytest.raises(TaskFailure) as failed:
        stack.run(kind, task_id)

    assert failed.value.message == (
        f"The data of image {source.id} does not match its os_hash_value: the stored image is corrupt "
        "or was replaced; nothing was written"
    )
    assert_nothing_left(stack, task_id, source)


def test_a_source_with_a_corrupt_header_is_refused_before_qemu_img_runs(stack: Stack, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.qcow2"
    garbage.write_bytes(make_qcow2(tmp_path).read_bytes()[:100])  # a qcow2 magic, then nothing
    source = put_record_for(stack, garbage, "qcow2")
    task_id = stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "raw"})

    with pytest.raises(TaskFailure) as failed:
        stack.run("convert", task_id)

    assert failed.value.message.startswith(f"The data of image {source.id} failed this cloud's checks: ")
    assert "truncated" in failed.value.message
    assert_nothing_left(stack, task_id, source)


def test_a_source_with_a_backing_file_never_reaches_qemu_img(stack: Stack, tmp_path: Path) -> None:
    # An image stored before the deployment switched its checks on: qemu-img would read the
    # backing file from the worker's own disk into the output.
    source = put_record_for(stack, make_qcow2_backing_file(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType.EXPORT, {"image_id": source.id, "disk_format": "raw"})

    with pytest.raises(TaskFailure, match="it has a backing file"):
        stack.run("export", task_id)

    assert_nothing_left(stack, task_id, source)


@pytest.mark.parametrize(
    ("kind", "make", "disk_format", "reason"),
    [
        ("convert", make_vmdk_parent, "vmdk", "its descriptor names a parent image"),
        ("export", make_vmdk_parent, "vmdk", "its descriptor names a parent image"),
        ("convert", make_vmdk_capacity_zero, "vmdk", "its header announces no capacity"),
        ("export", make_qcow2_huge_l1, "qcow2", "its L1 table (4194304 entries, 32 MiB) is far larger"),
    ],
    ids=["convert-vmdk-parent", "export-vmdk-parent", "convert-vmdk-extent", "export-qcow2-huge-l1"],
)
def test_a_hostile_stored_image_never_reaches_qemu_img(
    stack: Stack, tmp_path: Path, kind: str, make: Callable[..., Path], disk_format: str, reason: str
) -> None:
    # Data stored before these checks existed (or by a deployment that switched them off): the
    # source check before qemu-img refuses it, and nothing it names is opened or connected to.
    listener = LoopbackListener()
    try:
        if make is make_vmdk_parent:
            image = make(tmp_path, f"nbd://127.0.0.1:{listener.port}")
        elif make is make_vmdk_capacity_zero:
            image = make(tmp_path, extent=f"nbd:127.0.0.1:{listener.port}")
        else:
            image = make(tmp_path)
        source = put_record_for(stack, image, disk_format)
        task_id = stack.new_task(TaskType(kind), {"image_id": source.id, "disk_format": "raw"})

        with pytest.raises(TaskFailure) as failed:
            stack.run(kind, task_id)

        assert failed.value.message.startswith(
            f"The data of image {source.id} failed this cloud's checks: Image data is {disk_format} and is "
            f"not allowed: {reason}"
        )
        assert_nothing_left(stack, task_id, source)
        time.sleep(0.3)
        assert listener.connections == 0
    finally:
        listener.close()


def test_a_converted_image_larger_than_its_file_is_refused_by_its_virtual_size(
    stack: Stack, tmp_path: Path
) -> None:
    # 1 MiB of qcow2 announcing a 1 TiB disk (a sparse qcow2 that would expand), with a record
    # that claims a 1 MiB virtual disk: the size read from the data decides, before qemu-img runs.
    image = tmp_path / "sparse.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(image), "1T"], check=True, capture_output=True)
    source = put_record_for(stack, image, "qcow2")
    task_id = stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "vdi"})

    with pytest.raises(TaskFailure) as failed:
        stack.run("convert", task_id)

    assert failed.value.message == (
        "Converting this image to vdi needs 1033 GiB of working space (the 1 MiB image and a copy as "
        "large as its 1024 GiB virtual disk); this cloud allows 10 GiB for convert tasks"
    )
    assert_nothing_left(stack, task_id, source)


def put_record_for(stack: Stack, path: Path, disk_format: str) -> Image:
    """A record for data qemu-img cannot (or must not) open: sizes from the file alone."""
    image_id = str(uuid.uuid4())
    key = f"images/{image_id}"
    stack.s3.put_object(Bucket=stack.aws["IMAGES_BUCKET"], Key=key, Body=path.read_bytes())
    md5, sha512 = file_digests(path)
    image = new_image(
        image_id=image_id,
        owner=OWNER,
        name="bad",
        disk_format=disk_format,
        container_format="bare",
        size=path.stat().st_size,
        virtual_size=MiB,
        checksum=md5,
        os_hash_value=sha512,
        bucket=stack.aws["IMAGES_BUCKET"],
        key=key,
        task_id="import-task",
    )
    stack.images.create(image)
    return image


def test_qemu_img_failing_fails_the_task_with_its_message(stack: Stack, tmp_path: Path) -> None:
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    failing = tmp_path / "qemu-img"
    failing.write_text("#!/bin/sh\necho 'qemu-img: Could not create output: Permission denied' >&2\nexit 1\n")
    failing.chmod(0o755)
    stack.service("convert").qemu = QemuImg(str(failing))
    task_id = stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "raw"})

    with pytest.raises(TaskFailure) as failed:
        stack.run("convert", task_id)

    assert (
        failed.value.message
        == "qemu-img could not convert the image: Could not create output: Permission denied"
    )
    assert_nothing_left(stack, task_id, source)


def test_an_output_over_the_clouds_limits_is_refused_before_it_becomes_an_image(
    stack: Stack, tmp_path: Path
) -> None:
    service = stack.service("convert")
    checks = service.settings.image_checks.model_copy(update={"max_image_size_bytes": MiB // 2})
    service.settings = service.settings.model_copy(update={"image_checks": checks})
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")  # 1 MiB disk in a smaller qcow2
    task_id = stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "raw"})

    with pytest.raises(TaskFailure) as failed:
        stack.run("convert", task_id)

    assert failed.value.message.startswith(
        "The converted image failed this cloud's checks: The image is larger than this cloud's limit"
    )
    assert_nothing_left(stack, task_id, source)


def test_an_image_too_large_for_the_working_space_fails_before_any_work(stack: Stack, tmp_path: Path) -> None:
    source = stack.put_image(
        make_qcow2(tmp_path), "qcow2", size=20 * 1024 * MiB, virtual_size=40 * 1024 * MiB
    )
    task_id = stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "vmdk"})

    with pytest.raises(TaskFailure) as failed:
        stack.run("convert", task_id)

    assert failed.value.message == (
        "Converting this image to vmdk needs 61 GiB of working space (the 20 GiB image and a copy as "
        "large as its 40 GiB virtual disk); this cloud allows 10 GiB for convert tasks"
    )
    assert not stack.work_root.exists()  # refused before a byte was read
    assert stack.images.get(source.id).task_ids == ("import-task",)  # type: ignore[union-attr]


# ------------------------------------------------------------------ create-time checks via the API
@pytest.fixture
def api(aws: dict[str, str]) -> ModuleType:
    module = load_handler("tasks_api")
    module.tasks_table.cache_clear()
    module.task_service.cache_clear()
    return module


def post(api: ModuleType, body: dict[str, Any], project: str = OWNER) -> dict[str, Any]:
    return call(api, api_event("POST", "/v2/tasks", body=body, project=project))


def test_convert_and_export_tasks_are_created_pending(api: ModuleType, stack: Stack, tmp_path: Path) -> None:
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")

    converted = post(api, {"type": "convert", "input": {"image_id": source.id, "disk_format": "raw"}})
    exported = post(api, {"type": "export", "input": {"image_id": source.id}})

    assert converted["statusCode"] == 201 and converted["json"]["type"] == "convert"
    assert exported["statusCode"] == 201 and exported["json"]["status"] == "pending"


@pytest.mark.parametrize(
    ("task_type", "task_input", "message"),
    [
        ("convert", {"image_id": "unknown", "disk_format": "raw"}, "No image found with ID unknown"),
        ("export", {"image_id": "unknown"}, "No image found with ID unknown"),
        ("convert", {"image_id": "OTHER", "disk_format": "raw"}, "No image found with ID OTHER"),
        ("export", {"image_id": "OTHER"}, "No image found with ID OTHER"),
        (
            "convert",
            {"image_id": "OWN", "disk_format": "qed"},
            "Cannot convert to disk_format 'qed'; this cloud converts to: raw, qcow2, vmdk, vhd, vhdx, vdi",
        ),
        (
            "export",
            {"image_id": "OWN", "disk_format": "iso"},
            "Cannot export as disk_format 'iso'; supported targets: raw, qcow2, vmdk, vhd, vhdx, vdi",
        ),
        ("convert", {"image_id": "OWN"}, "Input does not contain 'disk_format' field"),
    ],
)
def test_bad_convert_and_export_requests_are_400_and_store_nothing(
    api: ModuleType, stack: Stack, tmp_path: Path, task_type: str, task_input: dict[str, Any], message: str
) -> None:
    own = stack.put_image(make_qcow2(tmp_path), "qcow2")
    others = stack.put_image(make_raw(tmp_path), "raw", owner="project-b")
    ids = {"OWN": own.id, "OTHER": others.id}
    task_input = {k: ids.get(v, v) if k == "image_id" else v for k, v in task_input.items()}
    message = message.replace("OTHER", others.id)

    response = post(api, {"type": task_type, "input": task_input})

    assert response["statusCode"] == 400
    assert response["json"]["error"]["message"] == message
    assert boto3.client("dynamodb").scan(TableName=stack.aws["TASKS_TABLE"], Select="COUNT")["Count"] == 0


@pytest.mark.parametrize(
    ("task_type", "target", "kind"), [("convert", "vmdk", "convert"), ("export", "raw", "export")]
)
def test_work_too_large_for_the_worker_is_a_400_at_create_time_with_honest_figures(
    api: ModuleType, stack: Stack, tmp_path: Path, task_type: str, target: str, kind: str
) -> None:
    source = stack.put_image(
        make_qcow2(tmp_path), "qcow2", size=20 * 1024 * MiB, virtual_size=40 * 1024 * MiB
    )

    response = post(api, {"type": task_type, "input": {"image_id": source.id, "disk_format": target}})

    # 20 GiB + 40 GiB (and 1 % of tables for vmdk) + 256 MiB of margin, rounded up: 61 GiB either way
    assert response["statusCode"] == 400
    assert response["json"]["error"]["message"] == (
        f"Converting this image to {target} needs 61 GiB of working space (the 20 GiB image and a copy "
        f"as large as its 40 GiB virtual disk); this cloud allows 10 GiB for {kind} tasks"
    )
    assert boto3.client("dynamodb").scan(TableName=stack.aws["TASKS_TABLE"], Select="COUNT")["Count"] == 0


def test_an_export_in_its_own_format_is_a_copy_and_needs_no_working_space(
    api: ModuleType, stack: Stack, tmp_path: Path
) -> None:
    source = stack.put_image(
        make_qcow2(tmp_path), "qcow2", size=20 * 1024 * MiB, virtual_size=40 * 1024 * MiB
    )

    response = post(api, {"type": "export", "input": {"image_id": source.id}})

    assert response["statusCode"] == 201


def test_the_served_task_schema_offers_convert_and_export(api: ModuleType) -> None:
    schema = call(api, api_event("GET", "/v2/schemas/task"))["json"]

    assert set(schema["properties"]["type"]["enum"]) >= {"import", "convert", "export"}


def test_subprocess_is_never_given_a_shell(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def spy(args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real_run(args, **kwargs)

    def popen_spy(args: Any, **kwargs: Any) -> Any:  # qemu-img convert, followed for its progress
        calls.append((args, kwargs))
        return real_popen(args, **kwargs)

    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    monkeypatch.setattr(subprocess, "run", spy)
    monkeypatch.setattr(subprocess, "Popen", popen_spy)
    stack.run("convert", stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "vdi"}))

    assert calls and all(isinstance(args, list) and not kwargs.get("shell") for args, kwargs in calls)
    for args, _ in calls:  # the source's format is named, never probed, and nothing else is opened
        spec = json.loads(args[-2].removeprefix("json:"))
        assert spec["driver"] == "qcow2" and spec["backing"] is None and spec["file"]["driver"] == "file"
    json.dumps(calls[0][0])  # plain strings only


# ------------------------------------------------------------------ a step that outlives its task
LATE_MESSAGE = "The task's processing step took longer than allowed and was stopped."


@pytest.mark.parametrize(
    ("kind", "task_input"),
    [
        ("convert", {"disk_format": "raw"}),
        ("export", {}),  # same format: streamed from the images bucket
        ("export", {"disk_format": "vhdx"}),  # converted locally, then uploaded
    ],
    ids=["convert", "export", "export-converted"],
)
def test_a_task_that_fails_while_its_step_uploads_gets_nothing_recorded_and_no_file(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, task_input: dict[str, Any]
) -> None:
    # Given a task whose step is running when the task fails (a step timeout, the reconciler)
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType(kind), {"image_id": source.id, **task_input})
    real_stage_stream = conversion.stage_stream

    def fails_first(*args: Any, **kwargs: Any) -> Any:
        fail_task(stack.tasks, task_id, LATE_MESSAGE)
        return real_stage_stream(*args, **kwargs)

    monkeypatch.setattr(conversion, "stage_stream", fails_first)

    # When the step finishes its upload
    with pytest.raises(TaskFailure, match="no longer processing"):
        stack.run(kind, task_id)

    # Then no image and no export file exist for it, and the failure (without a result) stands
    assert stack.image_count() == 1 and stack.images.get(stack.created_image_id(task_id)) is None
    assert stack.keys("IMAGES_BUCKET") == [source.key] and stack.keys("EXPORTS_BUCKET") == []
    assert stack.unfinished_uploads() == []
    task = stack.tasks.get(task_id)
    assert task is not None and task.status is TaskStatus.FAILURE
    assert task.message == LATE_MESSAGE and task.result is None


@pytest.mark.parametrize("kind", ["convert", "export"])
def test_a_step_started_for_a_task_that_already_failed_records_nothing_and_does_no_work(
    stack: Stack, tmp_path: Path, kind: str
) -> None:
    # Given a task that failed before its (late) step began
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType(kind), {"image_id": source.id, "disk_format": "raw"})
    fail_task(stack.tasks, task_id, LATE_MESSAGE)

    # When the step runs
    with pytest.raises(TaskFailure, match="no longer processing"):
        stack.run(kind, task_id)

    # Then the task is not recorded on its image, and nothing was written
    after = stack.images.get(source.id)
    assert after is not None and after.task_ids == source.task_ids and task_id not in after.task_ids
    assert stack.image_count() == 1 and stack.keys("EXPORTS_BUCKET") == []
    assert stack.keys("IMAGES_BUCKET") == [source.key] and stack.unfinished_uploads() == []


def test_the_result_of_a_step_that_outlived_its_task_is_never_recorded(stack: Stack, tmp_path: Path) -> None:
    # Given an export that finished while its task was still processing, and the task failing
    # before the workflow records the export's result (its URL)
    source = stack.put_image(make_qcow2(tmp_path), "qcow2")
    task_id = stack.new_task(TaskType.EXPORT, {"image_id": source.id})
    result = stack.run("export", task_id)
    fail_task(stack.tasks, task_id, LATE_MESSAGE)

    # When the workflow's RecordSuccess arrives
    recorded = load_handler("task_status").lambda_handler(
        {"action": "succeed", "task_id": task_id, "result": result}, FakeLambdaContext()
    )

    # Then the task keeps its failure and no result
    task = stack.tasks.get(task_id)
    assert recorded == {"status": "success"}
    assert task is not None and task.status is TaskStatus.FAILURE and task.result is None
    assert task.message == LATE_MESSAGE


# ------------------------------------------------------------------ images shared with the task's project
MEMBER = "project-member"


def share(stack: Stack, image: Image, status: str) -> None:
    """`image` (shared) with MEMBER as a member, in `status`, as the member API leaves it."""
    from imagetasks.auth.identity import Caller
    from imagetasks.services.image_sharing import ImageSharing

    sharing = ImageSharing(stack.images)
    sharing.add(image.id, {"member": MEMBER}, Caller(project_id=image.owner, user_id="owner-user"))
    if status != "pending":
        sharing.set_status(
            image.id, MEMBER, {"status": status}, Caller(project_id=MEMBER, user_id="member-user")
        )


def test_a_member_that_accepted_converts_and_exports_the_image_and_the_result_is_its_own(
    api: ModuleType, stack: Stack, tmp_path: Path
) -> None:
    # Given a qcow2 image of project-a shared with a member that accepted
    source = stack.put_image(make_qcow2(tmp_path), "qcow2", visibility="shared")
    share(stack, source, "accepted")

    # When the member asks for a convert and an export of it
    converted = post(api, {"type": "convert", "input": {"image_id": source.id, "disk_format": "raw"}}, MEMBER)
    exported = post(api, {"type": "export", "input": {"image_id": source.id}}, MEMBER)

    # Then both are created, and the convert makes an image of the member's project
    assert converted["statusCode"] == 201, converted["body"]
    assert exported["statusCode"] == 201, exported["body"]
    task_id = stack.new_task(TaskType.CONVERT, {"image_id": source.id, "disk_format": "raw"}, owner=MEMBER)
    result = stack.run("convert", task_id)
    image = stack.images.get(result["image_id"])
    assert image is not None and image.owner == MEMBER and image.visibility == "private"
    export_id = stack.new_task(TaskType.EXPORT, {"image_id": source.id}, owner=MEMBER)
    assert stack.run("export", export_id)["image_id"] == source.id


@pytest.mark.parametrize("status", ["pending", "rejected"])
def test_a_member_that_did_not_accept_may_not_convert_or_export(
    api: ModuleType, stack: Stack, tmp_path: Path, status: str
) -> None:
    source = stack.put_image(make_qcow2(tmp_path), "qcow2", visibility="shared")
    share(stack, source, status)

    converted = post(api, {"type": "convert", "input": {"image_id": source.id, "disk_format": "raw"}}, MEMBER)
    exported = post(api, {"type": "export", "input": {"image_id": source.id}}, MEMBER)

    for response in (converted, exported):
        assert response["statusCode"] == 400
        assert response["json"]["error"]["message"] == f"No image found with ID {source.id}"
