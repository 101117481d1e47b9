"""Glance's interoperable import (POST /v2/images/{id}/import) as an import task for that image.

The `web-download` method becomes the same import task POST /v2/tasks creates (same checks, same
workflow), with the target image's id in its input: the register step fills that image instead of
making a new one, and a failure puts it back to `queued` with Glance's bookkeeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from imagetasks.domain.errors import ConcurrentUpdate
from imagetasks.domain.image_import import (
    WEB_DOWNLOAD,
    ImportConflict,
    import_input,
    import_method,
    importing,
)
from imagetasks.domain.images import Image, ImageStatus
from imagetasks.domain.tasks import Task, TaskType
from imagetasks.services.ports import ImageStore
from imagetasks.services.tasks import TaskService


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
