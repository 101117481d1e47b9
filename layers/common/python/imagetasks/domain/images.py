"""The image entity: what a task produces, or a `queued` record (POST /v2/images) waiting for the
import that gives it data. No image is `active` until its bits passed the checks."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagetasks.domain import clock
from imagetasks.domain.errors import InvalidRequest, NotPermitted
from imagetasks.domain.image_listing import (
    MAX_INDEXED_VALUES,
    SHARED_SCOPE,
    VISIBILITIES,
    image_partitions,
    name_sort_value,
)
from imagetasks.domain.listing import MISSING, ListSpec
from imagetasks.domain.user_text import MAX_INT32, check_text

# Names Glance reserves for its own fields: a user's image_properties cannot set them.
CORE_FIELDS = frozenset(
    {
        "id", "name", "status", "disk_format", "container_format", "size", "virtual_size", "checksum",
        "os_hash_algo", "os_hash_value", "owner", "visibility", "protected", "min_disk", "min_ram", "tags",
        "created_at", "updated_at", "self", "file", "schema", "locations", "direct_url", "os_hidden",
    }
)  # fmt: skip
# Glance's image schema: a name has at most 255 characters (the images index keys on it, too).
MAX_NAME_LENGTH = 255


class ImageStatus(StrEnum):
    QUEUED = "queued"  # created by POST /v2/images, no data yet
    IMPORTING = "importing"  # an import task (POST /v2/images/{id}/import) is filling it
    ACTIVE = "active"


# Glance's bookkeeping of an interoperable import, kept in the image's properties: the task filling
# it, the stores it is being imported to, and the stores whose import failed.
IMPORT_TASK_PROPERTY = "os_glance_import_task"
IMPORTING_STORES_PROPERTY = "os_glance_importing_to_stores"
FAILED_IMPORT_PROPERTY = "os_glance_failed_import"
DEFAULT_STORE = "default"


class Image(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None = None
    status: ImageStatus = ImageStatus.ACTIVE
    disk_format: str
    container_format: str
    size: int | None = None  # None (like the checksums) while the image has no data
    virtual_size: int | None = None
    checksum: str | None = None
    os_hash_algo: str | None = "sha512"
    os_hash_value: str | None = None
    owner: str
    visibility: str = "private"
    protected: bool = False
    min_disk: int = 0
    min_ram: int = 0
    tags: tuple[str, ...] = ()
    os_hidden: bool = False
    created_at: datetime
    updated_at: datetime
    properties: dict[str, str] = Field(default_factory=dict)  # extra properties from image_properties
    bucket: str = ""  # where the bits are (never shown: the API hands out time-limited URLs); "" if none
    key: str = ""
    task_ids: tuple[str, ...] = ()  # tasks that produced or worked on the image


def extra_properties(image_properties: dict[str, Any]) -> dict[str, str]:
    """User properties other than Glance's own fields, as strings (Glance stores them so)."""
    return {
        str(k): str(v)
        for k, v in image_properties.items()
        if k not in CORE_FIELDS and k not in ("disk_format", "container_format") and v is not None
    }


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidRequest(f"Invalid {name} {value!r} in image_properties: expected true or false")


def _size(name: str, value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | str)
        or (isinstance(value, str) and len(value) > 40)
    ):
        raise InvalidRequest(f"Invalid {name} {str(value)[:40]!r} in image_properties: expected an integer")
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"Invalid {name} {value!r} in image_properties: expected an integer") from None
    if not 0 <= number <= MAX_INT32:
        raise InvalidRequest(
            f"Invalid {name} {str(value)[:40]} in image_properties: it must be from 0 to {MAX_INT32}"
        )
    return number


def glance_fields(image_properties: dict[str, Any]) -> dict[str, Any]:
    """The Glance fields an import applies from image_properties (visibility, protected, min_disk,
    min_ram, tags, os_hidden), validated as Glance does; absent ones keep their defaults."""
    fields: dict[str, Any] = {}
    if image_properties.get("visibility") is not None:
        visibility = image_properties["visibility"]
        if visibility not in VISIBILITIES:
            raise InvalidRequest(
                f"Invalid visibility {visibility!r} in image_properties; one of {VISIBILITIES}"
            )
        fields["visibility"] = visibility
    for name in ("protected", "os_hidden"):
        if image_properties.get(name) is not None:
            fields[name] = _flag(name, image_properties[name])
    for name in ("min_disk", "min_ram"):
        if image_properties.get(name) is not None:
            fields[name] = _size(name, image_properties[name])
    if image_properties.get("tags") is not None:
        tags = image_properties["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t) <= 255 for t in tags):
            raise InvalidRequest(
                "Invalid tags in image_properties: expected a list of strings of 1 to 255 characters"
            )
        for tag in tags:
            check_text("tags in image_properties", tag)
        fields["tags"] = tuple(dict.fromkeys(tags))
    return fields


#: An image record is one DynamoDB item (at most 400 KB): its extra properties and tags, as stored
#: (JSON, non-ASCII characters escaped), may take this many bytes together.
MAX_STORED_PROPERTY_BYTES = 256 * 1024


def check_indexed_values(tags: tuple[str, ...], properties: dict[str, str]) -> None:
    """Each tag and extra property is a list partition of its own: an image holds a bounded number
    (they are written in one transaction with the image), and they fit in the image's record."""
    count = len(tags) + len(properties)
    if count > MAX_INDEXED_VALUES:
        raise InvalidRequest(
            f"The image has {count} tags and extra properties; this cloud allows at most "
            f"{MAX_INDEXED_VALUES} together"
        )
    stored = len(json.dumps(properties)) + len(json.dumps(list(tags)))
    if stored > MAX_STORED_PROPERTY_BYTES:
        raise InvalidRequest(
            f"The image's extra properties and tags take {stored} bytes as stored (non-ASCII "
            f"characters take 6 each); this cloud stores at most {MAX_STORED_PROPERTY_BYTES} bytes "
            "of them per image"
        )


def _dimension_values(image: Image) -> dict[str, str | None]:
    """The image's values of the list dimensions (see imagetasks.domain.image_listing)."""
    return {
        "name": image.name,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "status": image.status.value,
        "visibility": image.visibility,
        "checksum": image.checksum,  # None (no partition) until the image has data
        "os_hash_value": image.os_hash_value,
    }


def partitions_of(image: Image) -> list[str]:
    """The list partitions the image has an index row in (see imagetasks.domain.image_listing)."""
    return image_partitions(
        image.owner, image.visibility, image.os_hidden, _dimension_values(image), image.tags, image.properties
    )


def shared_partitions_of(image: Image) -> list[str]:
    """The partitions of the shared scope (`image_listing.SHARED_SCOPE`) the image matches: how a list
    of the images shared with a project applies its filters to one (it has no rows there)."""
    return image_partitions(
        image.owner,
        image.visibility,
        image.os_hidden,
        _dimension_values(image),
        image.tags,
        image.properties,
        scopes=[SHARED_SCOPE],
    )


def new_image(
    *,
    image_id: str,
    owner: str,
    name: str | None,
    disk_format: str,
    container_format: str,
    size: int,
    virtual_size: int | None,
    checksum: str,
    os_hash_value: str,
    bucket: str,
    key: str,
    task_id: str,
    properties: dict[str, str] | None = None,
    moment: datetime | None = None,
) -> Image:
    created = moment or clock.now()
    return Image(
        id=image_id,
        name=name,
        disk_format=disk_format,
        container_format=container_format,
        size=size,
        virtual_size=virtual_size,
        checksum=checksum,
        os_hash_value=os_hash_value,
        owner=owner,
        created_at=created,
        updated_at=created,
        properties=properties or {},
        bucket=bucket,
        key=key,
        task_ids=(task_id,),
    )


IMAGE_LIST_SPEC = ListSpec(
    sort_keys=("created_at", "updated_at", "name", "size", "id"),
    default_sort_key="created_at",
    filters=(),
)


def image_sort_values(image: Image) -> dict[str, str]:
    created = clock.to_stored(image.created_at)
    tail = f"{created}#{image.id}"
    return {
        "created_at": tail,
        "updated_at": f"{clock.to_stored(image.updated_at)}#{tail}",
        "name": f"{name_sort_value(image.name) if image.name is not None else MISSING}#{tail}",
        "size": f"{image.size or 0:020d}#{tail}",
        "id": image.id,
    }


#: Glance's default policy: only admins make an image public (publicize_image).
ADMIN_ONLY_VISIBILITY = "public"


def check_publicize(visibility: object, is_admin: bool) -> None:
    """NotPermitted (403, Glance's text) when a member asks for a public image, however they ask:
    a create, a patch or an import's image_properties."""
    if visibility == ADMIN_ONLY_VISIBILITY and not is_admin:
        raise NotPermitted("You are not authorized to complete publicize_image action.")
