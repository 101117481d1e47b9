"""Glance's interoperable import (imagetasks.services.interoperable_import) on in-memory ports."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imagetasks.domain import clock
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.image_create import queued_image
from imagetasks.domain.image_import import TARGET_IMAGE, ImportConflict
from imagetasks.domain.images import IMPORT_TASK_PROPERTY, Image, ImageStatus
from imagetasks.domain.task_input import ImportRules
from imagetasks.services.interoperable_import import ImageImport
from imagetasks.services.task_lifecycle import Lifecycle
from imagetasks.services.tasks import TaskService
from tests.fakes import InMemoryImages, InMemoryTasks, RecordingWorkflow, accept

RULES = ImportRules(allowed_disk_formats=("qcow2", "raw"), allowed_container_formats=("bare",))
WEB_DOWNLOAD = {"method": {"name": "web-download", "uri": "https://example.invalid/cirros.qcow2"}}


def queued() -> Image:
    body = {"name": "cirros", "disk_format": "qcow2", "container_format": "bare"}
    return queued_image(body, "p1", False, RULES, clock.now())


def build(image: Image, workflow: RecordingWorkflow) -> tuple[ImageImport, InMemoryImages, InMemoryTasks]:
    images, tasks = InMemoryImages(image), InMemoryTasks()
    lifecycle = Lifecycle(tasks, timedelta(hours=1), 10)
    return ImageImport(images, TaskService(tasks, workflow, accept, lifecycle)), images, tasks


def test_web_download_marks_the_image_importing_and_starts_an_import_task_naming_it() -> None:
    image, workflow = queued(), RecordingWorkflow()
    importer, images, tasks = build(image, workflow)

    task = importer.start(image, WEB_DOWNLOAD, "uploads", clock.now(), user_id="u1")

    stored = images.get(image.id)
    assert stored is not None and stored.status is ImageStatus.IMPORTING
    assert stored.properties[IMPORT_TASK_PROPERTY] == task.id and task.id in stored.task_ids
    assert (task.input or {})[TARGET_IMAGE] == image.id and tasks.get(task.id) == task
    assert workflow.started == [(task.id, "import")]


def test_another_method_is_refused_before_anything_is_written() -> None:
    image, workflow = queued(), RecordingWorkflow()
    importer, images, tasks = build(image, workflow)

    with pytest.raises(InvalidRequest, match="glance-direct is not available"):
        importer.start(image, {"method": {"name": "glance-direct"}}, "uploads", clock.now())

    assert images.get(image.id) == image and tasks.tasks == {}


def test_an_image_that_is_not_queued_is_a_conflict() -> None:
    image = queued().model_copy(update={"status": ImageStatus.ACTIVE})
    importer, _, tasks = build(image, RecordingWorkflow())

    with pytest.raises(ImportConflict):
        importer.start(image, WEB_DOWNLOAD, "uploads", clock.now())
    assert tasks.tasks == {}


def test_an_image_changed_meanwhile_is_a_conflict_and_no_task_is_made() -> None:
    image = queued()
    importer, images, tasks = build(image, RecordingWorkflow())
    images.images[image.id] = image.model_copy(update={"name": "renamed"})

    with pytest.raises(ImportConflict, match="changed during the request"):
        importer.start(image, WEB_DOWNLOAD, "uploads", clock.now())
    assert tasks.tasks == {}


def test_when_the_task_cannot_start_the_image_is_queued_again() -> None:
    image = queued()
    importer, images, _ = build(image, RecordingWorkflow(fail_start=True))

    with pytest.raises(RuntimeError):
        importer.start(image, WEB_DOWNLOAD, "uploads", clock.now())

    stored = images.get(image.id)
    assert stored is not None and stored.status is ImageStatus.QUEUED
    assert IMPORT_TASK_PROPERTY not in stored.properties
