"""Glance's interoperable import (POST /v2/images/{id}/import) as an import task for that image.

The `web-download` method becomes the same import task POST /v2/tasks creates (same checks, same
workflow), with the target image's id in its input: the register step fills that image instead of
making a new one, and a failure puts it back to `queued` with Glance's bookkeeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from imagetasks.domain import clock
from imagetasks.domain.errors import ConcurrentUpdate
from imagetasks.domain.image_import import (
    WEB_DOWNLOAD,
    ImportConflict,
    back_to_queued,
    import_input,
    import_method,
    importing,
    is_importing_for,
    target_of,
)
from imagetasks.domain.images import Image, ImageStatus
from imagetasks.domain.tasks import Task, TaskType
from imagetasks.services.ports import ImageStore
from imagetasks.services.tasks import TaskService

# Writes of the queued-again image when someone changes it meanwhile (a PATCH).
RELEASE_ATTEMPTS = 5


def release_image(images: ImageStore, task: Task, remove_data: Callable[[str], None] | None = None) -> bool:
    """Put the image a failed (or cancelled) interoperable import was filling back to `queued`, with
    Glance's failed-import marks, its data removed first (`remove_data(image_id)`). Run before the
    task's failure is written, so that whoever sees the failure can import again at once. Nothing
    to do (False) when the image is not waiting for this task; ConcurrentUpdate if it kept changing."""
    target = target_of(task)
    if target is None:
        return False
    for _ in range(RELEASE_ATTEMPTS):
        image = images.get(target)
        if image is None or not is_importing_for(image, task):
            return False  # not this task's image (or not any more): nothing of it to undo
        if remove_data is not None:
            remove_data(image.id)
        if images.replace(image, back_to_queued(image, clock.now())):
            return True
    raise ConcurrentUpdate(f"Image {target} kept changing while its failed import was undone")


class ImageImport:
    def __init__(self, images: ImageStore, tasks: TaskService) -> None:
        self.images = images
        self.tasks = tasks

    def start(
        self,
        image: Image,
        body: Mapping[str, Any],
        uploads_bucket: str,
        moment: datetime,
        *,
        user_id: str | None = None,
        request_id: str | None = None,
    ) -> Task:
        """Create the import task filling `image` (already found visible and the caller's): checks
        first (400, nothing written), then queued → importing (409 if it is not queued), then the
        task and its workflow; the image is queued again if the task cannot be created."""
        uri = import_method(body, uploads_bucket)
        if image.status is not ImageStatus.QUEUED:
            raise ImportConflict(f"Image needs to be in 'queued' state to use '{WEB_DOWNLOAD}' method")
        task_input = import_input(image, uri)
        self.tasks.validate(TaskType.IMPORT, task_input, image.owner)
        task_id = str(uuid.uuid4())
        waiting = importing(image, task_id, moment)
        if not self.images.replace(image, waiting):
            raise ImportConflict(f"Image {image.id} changed during the request; try again")
        try:
            return self.tasks.create(
                TaskType.IMPORT,
                task_input,
                image.owner,
                user_id=user_id,
                request_id=request_id,
                task_id=task_id,
            )
        except Exception:
            if not self.images.replace(waiting, image.model_copy(update={"updated_at": moment})):
                raise ConcurrentUpdate(f"Image {image.id} changed during the request") from None
            raise
