"""What the images API's routers share: the table, object store and import service (built once per
execution environment by composition), an image as Glance shows it, and the owner's-change check."""

from functools import lru_cache
from typing import Any

from imagetasks import composition
from imagetasks.adapters.images_table import ImagesTable
from imagetasks.adapters.s3_objects import S3Objects
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.api import glance
from imagetasks.auth.identity import Caller
from imagetasks.config import settings
from imagetasks.domain import clock
from imagetasks.domain.images import Image, ImageStatus
from imagetasks.services.interoperable_import import ImageImport

IMAGES_PATH = "/v2/images"
NO_CONTENT_TYPE = "text/html; charset=UTF-8"


@lru_cache(maxsize=1)
def images_table() -> ImagesTable:
    return composition.images_table(settings())


@lru_cache(maxsize=1)
def tasks_table() -> TasksTable:
    return composition.tasks_table(settings())


@lru_cache(maxsize=1)
def objects() -> S3Objects:
    return composition.objects()


@lru_cache(maxsize=1)
def image_import() -> ImageImport:
    return composition.image_import(settings())


def render(image: Image) -> dict[str, Any]:
    view: dict[str, Any] = dict(image.properties)
    view.update(
        {
            "id": image.id,
            "name": image.name,
            "status": image.status.value,
            "disk_format": image.disk_format,
            "container_format": image.container_format,
            "size": image.size,
            "virtual_size": image.virtual_size,
            "checksum": image.checksum,
            "os_hash_algo": image.os_hash_algo if image.status is ImageStatus.ACTIVE else None,
            "os_hash_value": image.os_hash_value,
            "owner": image.owner,
            "visibility": image.visibility,
            "protected": image.protected,
            "min_disk": image.min_disk,
            "min_ram": image.min_ram,
            "tags": list(image.tags),
            "os_hidden": image.os_hidden,
            "created_at": clock.to_api(image.created_at),
            "updated_at": clock.to_api(image.updated_at),
            "self": f"{IMAGES_PATH}/{image.id}",
            "file": f"{IMAGES_PATH}/{image.id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return view


def own_image(image_id: str, caller: Caller, refusal: str) -> Image:
    """The image, for a change only its project may make: 404 when the caller cannot see it, 403
    with `refusal` for another project's public or community image."""
    image = images_table().get_visible(image_id, caller)
    if not caller.can_see(image.owner):
        raise glance.HttpError(403, refusal)
    return image
