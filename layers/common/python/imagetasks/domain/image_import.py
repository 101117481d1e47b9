"""Glance's interoperable import, the pure part: which import methods are offered, the import task's
input for an image, and the image's states while its import runs (queued → importing → active, or
back to queued with Glance's bookkeeping). The use case is imagetasks.services.interoperable_import.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from imagetasks.domain.errors import DomainError, InvalidRequest
from imagetasks.domain.image_patch import image_document
from imagetasks.domain.images import (
    DEFAULT_STORE,
    FAILED_IMPORT_PROPERTY,
    IMPORT_TASK_PROPERTY,
    IMPORTING_STORES_PROPERTY,
    Image,
    ImageStatus,
)
from imagetasks.domain.tasks import Task, TaskType

WEB_DOWNLOAD = "web-download"
IMPORT_METHODS = (WEB_DOWNLOAD,)
# The task input key naming the image an interoperable import fills (Glance's own import task uses it too).
TARGET_IMAGE = "image_id"


# Writes of the queued-again image when someone changes it meanwhile (a PATCH).
RELEASE_ATTEMPTS = 5


class ImportConflict(DomainError):
    """The image cannot take an import now (not queued, or changed meanwhile): HTTP 409."""


def import_method(body: Mapping[str, Any], uploads_bucket: str) -> str:
    """The web-download URI of an import request; InvalidRequest (400) for any other method."""
    method = body.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("name"), str):
        raise InvalidRequest("Import request requires a 'method' field with a 'name'.")
    name = method["name"]
    if name == "glance-direct":
        raise InvalidRequest(
            "Import method glance-direct is not available: image data cannot pass through this API "
            "(API Gateway limits a request to 10 MB). Upload the file to "
            f"s3://{uploads_bucket}/uploads/<project_id>/<file name> instead (an import task is created "
            f"for it), or import it from a URL with the {WEB_DOWNLOAD} method."
        )
    if name not in IMPORT_METHODS:
        raise InvalidRequest(
            f"Import method {name} is not available; this cloud offers: {', '.join(IMPORT_METHODS)}."
        )
    stores = body.get("stores")
    if stores is not None and stores != [DEFAULT_STORE]:
        raise InvalidRequest(f"This cloud has one store, '{DEFAULT_STORE}'; 'stores' can name only it.")
    uri = method.get("uri")
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidRequest(f"Import method {WEB_DOWNLOAD} requires a 'uri' to download the image from.")
    return uri


def import_input(image: Image, uri: str) -> dict[str, Any]:
    """The import task's input: where from, the image's formats and properties, and the target."""
    # The owner is the task's; a name the image does not have is not passed on.
    properties = {
        key: value
        for key, value in image_document(image).items()
        if key != "owner" and not (key == "name" and value is None)
    }
    return {
        "import_from": uri,
        "import_from_format": image.disk_format,
        "image_properties": properties,
        TARGET_IMAGE: image.id,
    }


def importing(image: Image, task_id: str, moment: datetime) -> Image:
    """The image while its import task runs (Glance's `importing` status and bookkeeping)."""
    properties = {k: v for k, v in image.properties.items() if k != FAILED_IMPORT_PROPERTY}
    properties.update({IMPORT_TASK_PROPERTY: task_id, IMPORTING_STORES_PROPERTY: DEFAULT_STORE})
    return image.model_copy(
        update={
            "status": ImageStatus.IMPORTING,
            "properties": properties,
            "task_ids": (*image.task_ids, task_id),
            "updated_at": moment,
        }
    )


def back_to_queued(image: Image, moment: datetime) -> Image:
    """The image after its import failed: queued again, the store's failure recorded as Glance does."""
    properties = {k: v for k, v in image.properties.items() if k != IMPORT_TASK_PROPERTY}
    properties.update({IMPORTING_STORES_PROPERTY: "", FAILED_IMPORT_PROPERTY: DEFAULT_STORE})
    return image.model_copy(
        update={"status": ImageStatus.QUEUED, "properties": properties, "updated_at": moment}
    )


def imported(image: Image, moment: datetime, data: Mapping[str, Any]) -> Image:
    """The image once its import succeeded: active, with the data's figures and where it is."""
    properties = {k: v for k, v in image.properties.items() if k != IMPORT_TASK_PROPERTY}
    properties.update({IMPORTING_STORES_PROPERTY: "", FAILED_IMPORT_PROPERTY: ""})
    return image.model_copy(
        update={"status": ImageStatus.ACTIVE, "properties": properties, "updated_at": moment, **data}
    )


def is_importing_for(image: Image | None, task: Task) -> bool:
    """Whether `image` is the one `task` was started for and still waits for it."""
    return (
        image is not None
        and image.status is ImageStatus.IMPORTING
        and image.owner == task.owner
        and image.properties.get(IMPORT_TASK_PROPERTY) == task.id
    )


def target_of(task: Task) -> str | None:
    """The image an interoperable import fills (POST /v2/images/{id}/import), if `task` is one."""
    if task.type is not TaskType.IMPORT:
        return None
    target = (task.input or {}).get(TARGET_IMAGE)
    return target if isinstance(target, str) and target else None
