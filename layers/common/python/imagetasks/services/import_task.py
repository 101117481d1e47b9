"""The import task's two steps: fetch (into staging, checked) and register (the active image)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from imagetasks import task_metrics
from imagetasks.domain import clock
from imagetasks.domain.errors import InvalidRequest, TaskNotProcessing
from imagetasks.domain.failures import failure
from imagetasks.domain.image_checks import ExpectedChecksums
from imagetasks.domain.image_import import imported, is_importing_for, target_of
from imagetasks.domain.images import (
    Image,
    ImageStatus,
    check_indexed_values,
    extra_properties,
    glance_fields,
    new_image,
)
from imagetasks.domain.progress import ProgressReporter
from imagetasks.domain.tasks import Task, TaskStatus, TaskType
from imagetasks.domain.uploads import UPLOAD_SOURCE, UploadedVersion
from imagetasks.observability import logger
from imagetasks.services.convert_export import ConversionService
from imagetasks.services.fetch_and_stage import FetchResult, ImportSettings, SourceWatch, fetch_and_check
from imagetasks.services.interoperable_import import release_image
from imagetasks.services.ports import Guard, ImageStore, ObjectStore, StepTasks

# Writes of the imported data into a queued image that someone changes meanwhile (PATCH /v2/images).
FILL_ATTEMPTS = 5


class ImportTaskSettings(BaseModel):
    """Where an import puts the data (staging, then the images bucket), where uploads arrive, and
    the format every imported image is converted to ("" keeps the uploaded format)."""

    model_config = ConfigDict(frozen=True)

    staging_bucket: str
    images_bucket: str
    uploads_bucket: str
    conversion_format: str = ""
    #: Where exports are written: a failed export's file is removed from there.
    exports_bucket: str = ""


def staging_key(task_id: str) -> str:
    return f"{task_id}/source"


def image_fields(properties: dict[str, Any]) -> dict[str, Any]:
    """The Glance fields image_properties sets (visibility, protected, min_disk, min_ram, tags,
    os_hidden); a wrong value fails the task with what to fix."""
    try:
        fields = glance_fields(properties)
        check_indexed_values(fields.get("tags", ()), extra_properties(properties))
    except InvalidRequest as invalid:
        raise failure("invalid_input", invalid.message) from invalid
    return fields


class ImportTask:
    def __init__(
        self,
        settings: ImportTaskSettings,
        import_settings: ImportSettings,
        tasks: StepTasks,
        images: ImageStore,
        objects: ObjectStore,
        conversion: ConversionService | None = None,
    ) -> None:
        self.settings = settings
        self.import_settings = import_settings
        self.tasks = tasks
        self.images = images
        self.objects = objects
        self.conversion = conversion

    def _task(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None or task.input is None:
            raise failure("internal", f"Task {task_id} no longer exists")
        if task.cancel_requested is not None:  # its clean-up may already have removed the input
            raise TaskNotProcessing(f"Task {task_id} was cancelled")
        return task

    def fetch(self, task_id: str) -> dict[str, Any]:
        task = self._task(task_id)
        task_input = task.input or {}
        properties = task_input.get("image_properties") or {}
        for key in ("import_from_format", "image_properties"):
            if key not in task_input:
                raise failure("invalid_input", f"Input does not contain '{key}' field")
        image_fields(dict(properties))  # refused before any data is read
        expected = ExpectedChecksums(
            checksum=task_input.get("checksum"), os_hash_value=task_input.get("os_hash_value")
        )
        # An upload is read only as the object its task was created for (a re-upload is not ours).
        upload = UploadedVersion.of_task(task_input) if self._upload_key(task) else UploadedVersion()
        # Progress every few seconds; its conditional write is also how this step learns that its
        # task was cancelled (or ended otherwise) and stops, leaving nothing staged.
        progress = ProgressReporter(
            "fetch", None, lambda figures: self.tasks.record_progress(task.id, figures)
        )
        result = fetch_and_check(
            str(task_input.get("import_from", "")),
            str(task_input["import_from_format"]),
            properties.get("container_format"),
            expected,
            self.settings.staging_bucket,
            staging_key(task.id),
            settings=self.import_settings,
            project_id=task.owner,
            s3_client=self.objects.client,
            source_etag=upload.etag,
            source_version_id=upload.version_id,
            progress=progress,
            # A source that stalls or trickles gives no progress write to notice a cancel: the
            # watch asks every few seconds and cuts the source.
            watch=SourceWatch(lambda: self.tasks.still_wanted(task.id)),
        )
        try:
            self.tasks.require_processing(task.id)
        except TaskNotProcessing:
            # Nothing records a fetch, but its staged data would wait for the bucket's lifecycle rule.
            logger.warning("Task no longer processing: staged data removed", extra={"task_id": task.id})
            self.objects.delete(result.staged_bucket, result.staged_key)
            raise
        logger.info("Image staged", extra={"size": result.size, "format": result.detected_format})
        return result.model_dump()

    def revert_fetch(self, task_id: str) -> None:
        """Undo fetch: remove what it staged for the task (everything under the task's prefix)."""
        self.objects.delete_prefix(self.settings.staging_bucket, f"{task_id}/")

    def register(self, task_id: str, staged: dict[str, Any], seconds_left: float = 900) -> dict[str, Any]:
        """Create the active image from the staged data, converted first when the deployment sets
        ConversionFormat; an interoperable import (its input names the image) fills that image
        instead. Safe to repeat: the image id comes from the task (its id, or its target), and an
        image already made by this task is the result of an earlier attempt."""
        task = self._task(task_id)
        fetched = FetchResult.model_validate(staged)
        target = self._target(task)
        image_id = target or task.created_image_id
        existing = self.images.get(image_id)
        done = existing is not None and self._made_by(existing, task)
        if existing is not None and target is None and not done:
            self._refuse_foreign(image_id, fetched)
        if not done:
            task_input = task.input or {}
            properties = dict(task_input.get("image_properties") or {})
            key = f"images/{image_id}"
            if target is not None and not is_importing_for(existing, task):
                self.objects.delete(fetched.staged_bucket, fetched.staged_key)
                raise failure(
                    "invalid_input",
                    f"Image {image_id} is no longer waiting for this import (it was deleted or changed)",
                )
            image = new_image(
                image_id=image_id,
                owner=task.owner,
                name=properties.get("name"),
                disk_format=str(task_input.get("import_from_format")),
                container_format=str(properties.get("container_format", "bare")),
                size=fetched.size,
                virtual_size=fetched.virtual_size,
                checksum=fetched.checksum,
                os_hash_value=fetched.os_hash_value,
                bucket=fetched.staged_bucket,
                key=fetched.staged_key,
                task_id=task.id,
                properties=extra_properties(properties),
            ).model_copy(update=image_fields(properties))
            target_format = self.settings.conversion_format
            if target_format and target_format != image.disk_format:
                try:
                    image = self._converted(image, target_format, key, task.id, seconds_left)
                except TaskNotProcessing:  # a progress write of the conversion found the task ended
                    self._discard(task.id, fetched, key)
                    raise
            else:
                self.objects.copy(fetched.staged_bucket, fetched.staged_key, self.settings.images_bucket, key)
                image = image.model_copy(update={"bucket": self.settings.images_bucket, "key": key})
            guard = self.tasks.processing_guard(task.id)
            try:
                if existing is None:
                    if not self.images.create(image, guard=guard):
                        self._lost_race(image_id, task, fetched, key)
                else:
                    self._fill(existing, image, guard, fetched, key, task)
            except TaskNotProcessing:
                self._discard(task.id, fetched, key)
                raise
            logger.info("Image registered", extra={"image_id": image_id})
            task_metrics.bytes_imported(fetched.size)
        self.objects.delete(fetched.staged_bucket, fetched.staged_key)
        self._remove_upload(task, fetched)
        return {"image_id": image_id}

    def revert_register(self, task_id: str) -> None:
        """Undo register for a task that failed: image bits without an image record are removed;
        the image an interoperable import was filling is queued again (Glance's failed-import marks).
        The same bits-without-record rule undoes a convert task's upload (its image id comes from
        the task the same way)."""
        task = self.tasks.get(task_id)
        target = self._target(task) if task is not None else None
        if target is None:
            if task is None:
                return
            image_id = task.created_image_id
            image = self.images.get(image_id)
            if image is not None and task.status is TaskStatus.FAILURE and self._created_by(image, task):
                # Made just before the task ended otherwise (a cancel that landed after the image
                # was written, before the success was): a failed task leaves no image. Its writes
                # were conditional on the task still running, so nothing can make it again.
                self.images.delete(image)
                logger.info("Task failed: the image it made removed", extra={"image_id": image_id})
                image = None
            if image is None:
                self.objects.delete(self.settings.images_bucket, f"images/{image_id}")
            return
        assert task is not None
        if release_image(self.images, task, self.remove_image_data):
            logger.info("Import failed: image queued again", extra={"image_id": target, "task_id": task_id})

    @staticmethod
    def _created_by(image: Image, task: Task) -> bool:
        """Whether `image` is the one `task` created (an import's or a convert's new image)."""
        return image.id == task.created_image_id and image.owner == task.owner and task.id in image.task_ids

    def revert_export(self, task_id: str) -> None:
        """Undo an export: what it wrote to the exports bucket (under the task's own prefix)."""
        task = self.tasks.get(task_id)
        if task is None or task.type is not TaskType.EXPORT or not self.settings.exports_bucket:
            return
        self.objects.delete_prefix(self.settings.exports_bucket, f"{task.owner}/{task.id}/")

    @staticmethod
    def _made_by(image: Image, task: Task) -> bool:
        """Whether `image` is what `task` produced (an earlier attempt of this step whose answer was
        lost): its owner's, active, and naming the task."""
        return image.owner == task.owner and image.status is ImageStatus.ACTIVE and task.id in image.task_ids

    def _refuse_foreign(self, image_id: str, fetched: FetchResult) -> None:
        """An image this task did not make holds the id of the one it was to create: the import fails
        (its upload, if any, is kept) rather than report an image that is not its owner's."""
        self.objects.delete(fetched.staged_bucket, fetched.staged_key)
        raise failure(
            "internal",
            f"Image {image_id}, which this import was to create, already exists and was not created by "
            "this task; nothing was imported (the source is kept). Create the task again.",
        )

    def _lost_race(self, image_id: str, task: Task, fetched: FetchResult, key: str) -> None:
        """The image's create found its id taken meanwhile: fine if by this task (a repeated step),
        else its bits go (they are not the other image's) and the import fails."""
        current = self.images.get(image_id)
        if current is not None and self._made_by(current, task):
            return
        self.objects.delete(self.settings.images_bucket, key)
        self._refuse_foreign(image_id, fetched)

    def _fill(
        self, waiting: Image, data: Image, guard: Guard, fetched: FetchResult, key: str, task: Task
    ) -> None:
        """The queued-then-importing image becomes active with the imported data (its own fields
        stay the image's: a PATCH during the import is kept, the write is tried again on it)."""
        figures = {
            name: getattr(data, name)
            for name in ("disk_format", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value")
        }
        figures.update({"bucket": data.bucket, "key": data.key})
        current: Image | None = waiting
        for _ in range(FILL_ATTEMPTS):
            assert current is not None
            if self.images.replace(current, imported(current, clock.now(), figures), guard=guard):
                return
            current = self.images.get(waiting.id)
            if not is_importing_for(current, task):
                break  # deleted, or no longer waiting for this task
        self.objects.delete(self.settings.images_bucket, key)
        self.objects.delete(fetched.staged_bucket, fetched.staged_key)
        raise failure("invalid_input", f"Image {waiting.id} was deleted or changed during its import")

    @staticmethod
    def _target(task: Task) -> str | None:
        return target_of(task)

    def _discard(self, task_id: str, fetched: FetchResult, key: str) -> None:
        """The task ended while register ran (a step timeout, the reconciler): no image record was
        written, so remove its bits and the staged data (the failure's clean-up may already have run)."""
        logger.warning(
            "Task no longer processing: image not registered, its data removed",
            extra={"task_id": task_id, "image_key": key},
        )
        image = self.images.get(key.removeprefix("images/"))
        if image is None or image.status is not ImageStatus.ACTIVE:
            self.objects.delete(self.settings.images_bucket, key)
        self.objects.delete(fetched.staged_bucket, fetched.staged_key)

    def _converted(self, staged: Image, target: str, key: str, task_id: str, seconds_left: float) -> Image:
        if self.conversion is None:
            raise failure("internal", "This cloud converts imports but has no conversion worker configured")
        stored, verdict = self.conversion.convert_staged(
            staged, target, self.settings.images_bucket, key, task_id, seconds_left
        )
        logger.info("Imported image converted", extra={"from": staged.disk_format, "to": target})
        return staged.model_copy(
            update={
                "disk_format": target,
                "size": stored.size,
                "checksum": stored.md5,
                "os_hash_value": stored.sha512,
                "virtual_size": verdict.virtual_size or staged.virtual_size,
                "bucket": self.settings.images_bucket,
                "key": key,
            }
        )

    def _upload_key(self, task: Task) -> str | None:
        """The key of the upload this task imports, if it is an upload task."""
        source = str((task.input or {}).get("import_from", ""))
        prefix = f"s3://{self.settings.uploads_bucket}/"
        if (task.input or {}).get("source") == UPLOAD_SOURCE and source.startswith(prefix):
            return source[len(prefix) :]
        return None

    def _remove_upload(self, task: Task, fetched: FetchResult) -> None:
        """An image uploaded to the uploads bucket is removed once imported (kept if it fails), and
        only while it is the object imported: the same key uploaded again meanwhile is kept."""
        key = self._upload_key(task)
        if key is None:
            return
        etag = fetched.source_etag or UploadedVersion.of_task(task.input or {}).etag
        if etag is None:
            logger.warning("Upload kept: which object was imported is not known", extra={"key": key})
            return
        if not self.objects.delete_if_unchanged(self.settings.uploads_bucket, key, etag):
            logger.info(
                "Upload kept: the key was uploaded again during the import", extra={"key": key, "etag": etag}
            )

    def clean_up(self, task_id: str) -> None:
        """What the workflow's clean-up state (and the reconciler, when that state did not run)
        calls for a failed task: each step's undo, whichever steps ran."""
        self.revert_fetch(task_id)
        self.revert_register(task_id)
        self.revert_export(task_id)

    def remove_image_data(self, image_id: str) -> None:
        """The bits an import of `image_id` may have written to the images bucket."""
        self.objects.delete(self.settings.images_bucket, f"images/{image_id}")
