"""The convert and export tasks: read an image, rewrite it with qemu-img if asked, check and store it.

Both read the source image's data once, into the function's ephemeral storage, while checking it
again with the format inspector (format, backing files, VMDK extents: qemu-img must never be handed
data that could make it read host files) and comparing its sha512 with the image's record. The
output is inspected again while it is uploaded in one hashing pass; the multipart upload is
completed only after every check passed, so a refused output never becomes an S3 object.

An export that keeps the image's format needs no local copy: it streams from the images bucket to
the exports bucket through the same checks.

Each phase reports the task's progress (``download``, ``convert``, ``upload``; ``copy`` for that
streamed export) with the tasks table's conditional write: once the task is no longer processing
(cancelled, timed out) the write fails and the phase stops there, qemu-img is killed, a multipart
upload is aborted and the working directory removed, so a cancelled task leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagetasks.adapters.http_source import S3Source
from imagetasks.adapters.qemu import QemuImg
from imagetasks.adapters.staging import ChunkObserver, StagedObject, StreamDigests, stage_stream
from imagetasks.domain import clock
from imagetasks.domain.conversion import (
    SOURCE_FORMATS,
    TARGET_FORMATS,
    TARGET_OPTIONS,
    check_working_space,
    validate_convert_input,
    validate_export_input,
)
from imagetasks.domain.errors import ConcurrentUpdate, TaskNotProcessing
from imagetasks.domain.failures import TaskFailure, failure
from imagetasks.domain.image_checks import ImageChecker, ImageCheckSettings, ImageVerdict
from imagetasks.domain.images import Image, new_image
from imagetasks.domain.import_errors import (
    ImageRejected,
    SourceUnavailable,
    TransientImportError,
    TransientStorageError,
)
from imagetasks.domain.progress import DEFAULT_INTERVAL_SECONDS, ProgressReporter
from imagetasks.domain.runners import RunnerLimits
from imagetasks.domain.tasks import Task
from imagetasks.observability import logger
from imagetasks.services.ports import ImageStore, ObjectStore, StepTasks

MiB = 1024 * 1024
GiB = 1024 * MiB
CHUNK_SIZE = 8 * MiB
#: Time kept after qemu-img for uploading the output and recording the result.
UPLOAD_RESERVE_SECONDS = 120
MIN_CONVERT_SECONDS = 30
#: How long an export's download URL works. The object itself lives for the exports bucket's
#: expiration (ExportExpirationDays); a URL signed with the function's temporary credentials
#: cannot outlive them anyway, so long lifetimes would be a promise S3 does not keep.
EXPORT_URL_SECONDS = 3600

#: The source is always inspected and safety checked, whatever the deployment chose for imports:
#: a qcow2 with a backing file or a VMDK naming a host file would make qemu-img read that file.
SOURCE_CHECKS = ImageCheckSettings(
    max_image_size_bytes=None, allowed_disk_formats=(), allowed_container_formats=()
)


class ConversionSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    images_bucket: str
    exports_bucket: str
    allowed_disk_formats: tuple[str, ...]
    allowed_container_formats: tuple[str, ...]
    #: The working space of the runner this runs on, and whether the container runner can take over.
    limits: RunnerLimits
    work_root: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "imagetasks-work")
    #: Checks on what a convert produces: it becomes an image, so the cloud's limits apply.
    image_checks: ImageCheckSettings = Field(default_factory=ImageCheckSettings)
    export_url_seconds: int = EXPORT_URL_SECONDS
    part_size: int = 64 * MiB
    #: How often a running phase writes its progress (and so learns whether its task still runs).
    progress_interval_seconds: float = DEFAULT_INTERVAL_SECONDS


class Workspaces:
    """Per-task working directories, and removal of those a killed invocation left behind.

    A Lambda timeout restarts the runtime process but keeps /tmp, so a directory left under the
    root by a process that is gone (or by this process, outside a running task) is garbage that
    would shrink the next task's space. Directories are named after their process, so tasks in
    threads of one process, or other processes sharing the root (tests, local stacks on one
    machine), never remove each other's live work.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[Path] = set()

    def _is_leftover(self, path: Path) -> bool:
        pid_text = path.name.split("-", 1)[0]
        if not pid_text.isdigit():
            return False  # not ours: never remove what we did not name
        pid = int(pid_text)
        if pid == os.getpid():
            return path not in self._active
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, someone else's
        return False

    @contextmanager
    def open(self, root: Path, task_id: str) -> Iterator[Path]:
        root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for leftover in root.iterdir():
                if self._is_leftover(leftover):
                    shutil.rmtree(leftover, ignore_errors=True)
            work = root / f"{os.getpid()}-{task_id}-{uuid.uuid4().hex[:8]}"
            work.mkdir()
            self._active.add(work)
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with self._lock:
                self._active.discard(work)


WORKSPACES = Workspaces()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as data:
        while chunk := data.read(CHUNK_SIZE):
            yield chunk


class InspectorBites:
    """Feeds an ImageChecker in 64 KiB pieces, however large the chunks are.

    oslo.utils' VHDX inspector learns where its virtual-disk-size region is only after parsing the
    metadata region; when one large chunk holds both, the region it then asks for has already
    gone past and the inspector never completes ("Incomplete file cannot be safety checked").
    Glance feeds its inspectors 64 KiB at a time; so do we.
    """

    BITE = 64 * 1024

    def __init__(self, checker: ImageChecker) -> None:
        self._checker = checker

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        for start in range(0, len(view), self.BITE):
            self._checker.feed(bytes(view[start : start + self.BITE]))


class _Sha512:
    """A chunk observer that hashes what streams past (the source's integrity check)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha512()

    def feed(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class ConversionService:
    def __init__(
        self,
        settings: ConversionSettings,
        tasks: StepTasks,
        images: ImageStore,
        objects: ObjectStore,
        qemu: QemuImg | None = None,
    ) -> None:
        self.settings = settings
        self.tasks = tasks
        self.images = images
        self.objects = objects
        self.qemu = qemu or QemuImg()

    # ------------------------------------------------------------------ the two task types
    def convert(self, task_id: str, seconds_left: float) -> dict[str, Any]:
        """Create a new image, in the target format, from the task's image; {"image_id": new id}.

        Safe to repeat: the new image's id is the task's (random, stored with it), and an image of
        this task with that id is the work of an earlier attempt whose answer was lost; an image
        that is not this task's fails the task (never reported as its result)."""
        task = self._task(task_id)
        new_id = task.created_image_id
        existing = self.images.get(new_id)
        if existing is not None:
            if self._made_by(existing, task):
                return {"image_id": new_id}
            raise self._taken(new_id)
        source = self._source(str((task.input or {}).get("image_id", "")))
        request = validate_convert_input(
            task.input or {},
            task.owner,
            self.images.get,
            self.settings.allowed_disk_formats,
            self.settings.allowed_container_formats,
            shared_with=self.images.accepted_member,
        )
        target = request.disk_format
        container_format = request.container_format or source.container_format
        check_working_space(source, target, self.settings.limits, "convert")
        self._note_task(source, task)
        key = f"images/{new_id}"
        checker = ImageChecker(self.settings.image_checks, target, container_format)
        with WORKSPACES.open(self.settings.work_root, task.id) as work:
            output = self._convert_locally(source, target, work, seconds_left, "convert", task.id)
            staged, verdict = self._upload(output, self.settings.images_bucket, key, checker, source, task.id)
        image = new_image(
            image_id=new_id,
            owner=task.owner,
            name=request.name if request.name is not None else source.name,
            disk_format=target,
            container_format=container_format,
            size=staged.size,
            virtual_size=verdict.virtual_size or source.virtual_size,
            checksum=staged.md5,
            os_hash_value=staged.sha512,
            bucket=self.settings.images_bucket,
            key=key,
            task_id=task.id,
            properties=dict(source.properties),
        ).model_copy(update={"min_disk": source.min_disk, "min_ram": source.min_ram})
        try:
            created = self.images.create(image, guard=self.tasks.processing_guard(task.id))
        except TaskNotProcessing:
            logger.warning(
                "Task no longer processing: converted image not registered, its data removed",
                extra={"task_id": task.id, "image_key": key},
            )
            if self.images.get(new_id) is None:
                self.objects.delete(self.settings.images_bucket, key)
            raise
        if not created:
            current = self.images.get(new_id)
            if current is None or not self._made_by(current, task):
                self.objects.delete(self.settings.images_bucket, key)
                raise self._taken(new_id)
        logger.info("Image converted", extra={"image_id": new_id, "source": source.id, "format": target})
        return {"image_id": new_id}

    @staticmethod
    def _made_by(image: Image, task: Task) -> bool:
        return image.owner == task.owner and task.id in image.task_ids

    @staticmethod
    def _taken(image_id: str) -> Exception:
        return failure(
            "internal",
            f"Image {image_id}, which this conversion was to create, already exists and was not created "
            "by this task; nothing was converted. Create the task again.",
        )

    def export(self, task_id: str, seconds_left: float) -> dict[str, Any]:
        """Write the image (converted if asked) to the exports bucket; where it is and a URL."""
        task = self._task(task_id)
        source = self._source(str((task.input or {}).get("image_id", "")))
        request = validate_export_input(
            task.input or {}, task.owner, self.images.get, shared_with=self.images.accepted_member
        )
        target = request.disk_format or source.disk_format
        bucket = self.settings.exports_bucket
        key = f"{task.owner}/{task.id}/{source.id}.{target}"
        # An export is not a new image of this cloud: the cloud's image limits do not apply to it.
        checker = ImageChecker(SOURCE_CHECKS, target)
        self._note_task(source, task)
        if target == source.disk_format:
            self.settings.limits.transfer(source.size)  # NeedsContainer before the first byte
            staged = self._stream_copy(source, bucket, key, checker, task.id)
        else:
            check_working_space(source, target, self.settings.limits, "export")
            with WORKSPACES.open(self.settings.work_root, task.id) as work:
                output = self._convert_locally(source, target, work, seconds_left, "export", task.id)
                staged, _ = self._upload(output, bucket, key, checker, source, task.id)
        try:
            # Nothing else is written for an export: the workflow records the result below on the
            # task, conditionally on it still processing. A task that ended meanwhile gets no file.
            self.tasks.require_processing(task.id)
        except TaskNotProcessing:
            logger.warning(
                "Task no longer processing: exported file removed",
                extra={"task_id": task.id, "export_key": key},
            )
            self.objects.delete(bucket, key)
            raise
        expires_at = clock.now() + timedelta(seconds=self.settings.export_url_seconds)
        url = self.objects.presigned_get(bucket, key, self.settings.export_url_seconds)
        logger.info("Image exported", extra={"image_id": source.id, "format": target, "size": staged.size})
        return {
            "image_id": source.id,
            "bucket": bucket,
            "key": key,
            "size": staged.size,
            "checksum": staged.md5,
            "os_hash_algo": "sha512",
            "os_hash_value": staged.sha512,
            "disk_format": target,
            "url": url,
            "url_expires_at": clock.to_api(expires_at),
        }

    # ------------------------------------------------------------------ steps
    # ------------------------------------------------------------------ conversion on import
    def convert_staged(
        self,
        staged: Image,
        target: str,
        bucket: str,
        key: str,
        task_id: str,
        seconds_left: float,
    ) -> tuple[StagedObject, ImageVerdict]:
        """Convert imported data that passed the checks (described by `staged`, an image not yet
        registered) into `target` at s3://bucket/key, inspecting the output again on the way."""
        check_working_space(staged, target, self.settings.limits, "import")
        checker = ImageChecker(self.settings.image_checks, target, staged.container_format)
        with WORKSPACES.open(self.settings.work_root, task_id) as work:
            output = self._convert_locally(staged, target, work, seconds_left, "import", task_id)
            return self._upload(output, bucket, key, checker, None, task_id)

    def _task(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise failure("internal", f"Task {task_id} no longer exists")
        if task.cancel_requested is not None:
            raise TaskNotProcessing(f"Task {task_id} was cancelled")
        return task

    def _source(self, image_id: str) -> Image:
        image = self.images.get(image_id)
        if image is None:
            raise failure("image_unavailable", f"Image {image_id} was deleted before the task could read it")
        return image

    def _still_there(self, source: Image) -> None:
        if self.images.get(source.id) is None:
            raise failure(
                "image_unavailable", f"Image {source.id} was deleted while the task was working on it"
            )

    def _note_task(self, source: Image, task: Task) -> None:
        """Record the task on the image (GET /v2/images/{id}/tasks); bookkeeping, never fatal, but
        only for a task still processing (TaskNotProcessing stops the step before any work)."""
        try:
            self.images.add_task(source.id, task.id, guard=self.tasks.processing_guard(task.id))
        except ConcurrentUpdate:
            logger.warning("Could not record the task on its image", extra={"image_id": source.id})

    def _progress(self, task_id: str, step: str, bytes_total: int | None) -> ProgressReporter:
        """A phase's progress; its write raises TaskNotProcessing once the task ended."""
        return ProgressReporter(
            step,
            bytes_total,
            lambda figures: self.tasks.record_progress(task_id, figures),
            interval=self.settings.progress_interval_seconds,
        )

    def _convert_locally(
        self, source: Image, target: str, work: Path, seconds_left: float, kind: str, task_id: str
    ) -> Path:
        source_path = work / f"source.{source.disk_format}"
        verdict = self._download(source, source_path, self._progress(task_id, "download", source.size))
        # Again with the virtual size the data itself announces (the record's may be missing).
        check_working_space(source, target, self.settings.limits, kind, verdict.virtual_size)
        output = work / f"output.{target}"
        timeout = max(seconds_left - UPLOAD_RESERVE_SECONDS, MIN_CONVERT_SECONDS)
        # qemu-img's percentage is of the virtual disk: shown as bytes of it gone through.
        disk_bytes = verdict.virtual_size or source.virtual_size or source_path.stat().st_size
        progress = self._progress(task_id, "convert", disk_bytes)
        progress.start()
        self.qemu.convert(
            source_path,
            SOURCE_FORMATS[source.disk_format],
            output,
            TARGET_FORMATS[target],
            timeout,
            TARGET_OPTIONS.get(target, ()),
            on_progress=lambda percent: progress.advance_to(int(disk_bytes * percent / 100)),
        )
        source_path.unlink()  # room for nothing else now, but free it before the long upload
        return output

    def _download(self, source: Image, path: Path, progress: ProgressReporter) -> ImageVerdict:
        """Copy the image's data to ``path``, checking it as it arrives (see the module's text)."""
        checker = ImageChecker(SOURCE_CHECKS, source.disk_format)
        inspector = InspectorBites(checker)
        sha512 = _Sha512()
        progress.start()
        try:
            with (
                S3Source(self.objects.client, chunk_size=CHUNK_SIZE).open(
                    source.bucket, source.key
                ) as stream,
                path.open("wb") as local,
            ):
                for chunk in stream:
                    inspector.feed(chunk)
                    sha512.feed(chunk)
                    local.write(chunk)
                    progress.feed(chunk)
            verdict = checker.finish(checksum="", os_hash_value=sha512.hexdigest())
        except SourceUnavailable:
            raise failure(
                "image_unavailable", f"Image {source.id} was deleted while the task was reading it"
            ) from None
        except TransientImportError as busy:
            # The workflow retries storage trouble by this name (the source is our own bucket).
            raise TransientStorageError(busy.message) from busy
        except ImageRejected as refused:
            raise failure(
                "image_rejected",
                f"The data of image {source.id} failed this cloud's checks: {refused.message}",
            ) from None
        except OSError as error:
            raise failure(
                "too_large",
                f"The image could not be written to the worker's working space ({error.strerror})",
            ) from None
        self._require_intact(source, sha512.hexdigest())
        return verdict

    def _require_intact(self, source: Image, os_hash_value: str) -> None:
        if os_hash_value != source.os_hash_value:
            raise failure(
                "image_unavailable",
                f"The data of image {source.id} does not match its os_hash_value: the stored image is "
                "corrupt or was replaced; nothing was written",
            )

    def _upload(
        self, path: Path, bucket: str, key: str, checker: ImageChecker, source: Image | None, task_id: str
    ) -> tuple[StagedObject, ImageVerdict]:
        """Upload ``path`` with hashing and checks; completed only if the checks pass and the
        source image still exists."""
        verdicts: list[ImageVerdict] = []

        def verify(digests: StreamDigests) -> None:
            verdicts.append(checker.finish(checksum=digests.md5, os_hash_value=digests.sha512))
            if source is not None:
                self._still_there(source)

        staged = self._stage(
            _file_chunks(path),
            bucket,
            key,
            [InspectorBites(checker)],
            verify,
            "The converted image",
            self._progress(task_id, "upload", path.stat().st_size),
        )
        return staged, verdicts[0]

    def _stream_copy(
        self, source: Image, bucket: str, key: str, checker: ImageChecker, task_id: str
    ) -> StagedObject:
        """Copy the image's data as it is, checked and hashed on the way (no local copy)."""

        def verify(digests: StreamDigests) -> None:
            checker.finish(checksum=digests.md5, os_hash_value=digests.sha512)
            self._require_intact(source, digests.sha512)
            self._still_there(source)

        try:
            with S3Source(self.objects.client, chunk_size=CHUNK_SIZE).open(
                source.bucket, source.key
            ) as stream:
                return self._stage(
                    stream,
                    bucket,
                    key,
                    [InspectorBites(checker)],
                    verify,
                    f"The data of image {source.id}",
                    self._progress(task_id, "copy", source.size),
                )
        except SourceUnavailable:
            raise failure(
                "image_unavailable", f"Image {source.id} was deleted while the task was reading it"
            ) from None
        except TransientImportError as busy:
            raise TransientStorageError(busy.message) from busy

    def _stage(
        self,
        chunks: Any,
        bucket: str,
        key: str,
        observers: list[ChunkObserver],
        verify: Callable[[StreamDigests], None],
        what: str,
        progress: ProgressReporter,
    ) -> StagedObject:
        def finish(digests: StreamDigests) -> None:
            # The last figures before the upload is completed: a task that ended meanwhile makes
            # this write fail, and the upload is aborted instead (no object left behind).
            progress.finish()
            verify(digests)

        progress.start()
        try:
            return stage_stream(
                chunks,
                bucket,
                key,
                self.objects.client,
                part_size=self.settings.part_size,
                observers=[*observers, progress],
                before_complete=finish,
            )
        except ImageRejected as refused:
            raise TaskFailure(f"{what} failed this cloud's checks: {refused.message}") from None
