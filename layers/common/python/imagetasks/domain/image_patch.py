"""PATCH /v2/images/{image_id}: Glance's JSON-patch changes of an image, read and applied as Glance
reads and applies them.

A request is a list of operations (`add`, `remove`, `replace`) on one attribute each: `/name`,
`/visibility`, `/protected`, `/os_hidden`, `/min_disk`, `/min_ram`, `/tags`, `/owner` (admins), the
formats (while the image is queued) and extra properties `/<name>`. Each operation is checked as it is
read (pointer, value present, read-only and reserved attributes: 400 and 403 with Glance's texts),
then all of them are applied to the image in order (409 for an extra property that does not exist,
403 for removing an image attribute), and the image they give is checked as a whole with the same
rules as an image created by POST /v2/images.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import DomainError, InvalidRequest, NotFound, NotPermitted, ReservedProperty
from imagetasks.domain.image_create import image_fields
from imagetasks.domain.images import Image, ImageStatus, check_publicize
from imagetasks.domain.task_input import RESERVED_PROPERTY_PREFIX, ImportRules


class PatchDialect(IntEnum):
    """The JSON-schema draft a patch media type follows (Glance's numbering): draft 10 writes
    `{"op": "add", "path": "/x", "value": ...}`, draft 4 `{"add": "/x", "value": ...}`."""

    DRAFT_4 = 4
    DRAFT_10 = 10


PATCH_MEDIA_TYPES = {
    "application/openstack-images-v2.0-json-patch": PatchDialect.DRAFT_4,
    "application/openstack-images-v2.1-json-patch": PatchDialect.DRAFT_10,
}
OPERATIONS = ("add", "remove", "replace")
# What a patch may not touch (Glance's answers: 403 "Attribute 'x' is read-only." / "... is reserved.").
READ_ONLY = frozenset(
    {
        "created_at", "updated_at", "status", "checksum", "size", "virtual_size", "direct_url", "self",
        "file", "schema", "id", "os_hash_algo", "os_hash_value",
    }
)  # fmt: skip
RESERVED = frozenset({"location", "deleted", "deleted_at"})
# The image's own attributes: a patch sets them but cannot remove them (Glance's 403).
ATTRIBUTES = frozenset(
    {
        "name", "visibility", "protected", "os_hidden", "min_disk", "min_ram", "tags", "owner",
        "disk_format", "container_format",
    }
)  # fmt: skip
FORMATS = ("disk_format", "container_format")
LOCATIONS = "locations"


class PatchConflict(DomainError):
    """A change that does not fit the image as it is (Glance's 409), e.g. replacing a missing property."""


class Change(BaseModel):
    """One operation of a patch, its pointer decoded to the attribute it names."""

    model_config = ConfigDict(frozen=True)

    op: Literal["add", "remove", "replace"]
    path: tuple[str, ...]
    value: Any = None
    dialect: PatchDialect = PatchDialect.DRAFT_10

    @property
    def attribute(self) -> str:
        return self.path[0]


def patch_dialect(content_type: str | None) -> PatchDialect | None:
    """The dialect of a request's Content-Type (its parameters ignored), or None if not a patch type."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return PATCH_MEDIA_TYPES.get(media_type)


def parse_changes(body: Any, dialect: PatchDialect) -> list[Change]:
    """The operations of a patch body, each checked as Glance checks it before anything is applied."""
    if not isinstance(body, list):
        raise InvalidRequest("Request body must be a JSON array of operation objects.")
    changes = []
    for raw in body:
        if not isinstance(raw, dict):
            raise InvalidRequest("Operations must be JSON objects.")
        op, pointer = _operation(raw, dialect)
        path = _decode_pointer(pointer)
        depth = 2 if path[0] == LOCATIONS and op in ("add", "remove") else 1
        if len(path) != depth:
            raise InvalidRequest(f"Invalid JSON pointer for this resource: '/{'/'.join(path)}'")
        if op != "remove" and "value" not in raw:
            raise InvalidRequest(f'Operation "{op}" requires a member named "value".')
        change = Change(op=op, path=tuple(path), value=raw.get("value"), dialect=dialect)
        _check_writable(change.attribute)
        changes.append(change)
    return changes


def _operation(raw: dict[str, Any], dialect: PatchDialect) -> tuple[Any, str]:
    op: Any
    if dialect is PatchDialect.DRAFT_4:
        named = [op for op in OPERATIONS if op in raw]
        if len(named) != 1:
            how = "exactly" if not named else "only"
            raise InvalidRequest(
                f'Operation objects must contain {how} one member named "add", "remove", or "replace".'
            )
        op = named[0]
        pointer = raw[op]
    else:
        op = raw.get("op")
        if op is None:
            raise InvalidRequest(
                f"Unable to find `op` in JSON Schema change. It must be one of the following: "
                f"{', '.join(OPERATIONS)}."
            )
        if op not in OPERATIONS:
            raise InvalidRequest(
                f"Invalid operation: `{op}`. It must be one of the following: {', '.join(OPERATIONS)}."
            )
        if "path" not in raw:
            raise InvalidRequest("Unable to find 'path' in JSON Schema change")
        pointer = raw["path"]
    if not isinstance(pointer, str):
        raise InvalidRequest(f"The path of a {op} operation must be a JSON pointer string such as '/name'.")
    return op, pointer


def _decode_pointer(pointer: str) -> list[str]:
    """A JSON pointer's tokens (`~1` is `/`, `~0` is `~`), refusing the forms Glance refuses."""
    if not pointer.startswith("/"):
        raise InvalidRequest(f'Pointer `{pointer}` does not start with "/".')
    if re.search(r"/\s*?/", pointer[1:]):
        raise InvalidRequest(f'Pointer `{pointer}` contains adjacent "/".')
    if len(pointer) > 1 and pointer.endswith("/"):
        raise InvalidRequest(f'Pointer `{pointer}` end with "/".')
    if not pointer[1:].strip():
        raise InvalidRequest(f"Pointer `{pointer}` does not contains valid token.")
    if re.search(r"~[^01]", pointer) or pointer.endswith("~"):
        raise InvalidRequest(f'Pointer `{pointer}` contains "~" not part of a recognized escape sequence.')
    return [part.replace("~1", "/").replace("~0", "~").strip() for part in pointer[1:].split("/")]


def _check_writable(attribute: str) -> None:
    if attribute in READ_ONLY:
        raise ReservedProperty(f"Attribute '{attribute}' is read-only.")
    if attribute in RESERVED or attribute.startswith(RESERVED_PROPERTY_PREFIX):
        raise ReservedProperty(f"Attribute '{attribute}' is reserved.")
    if attribute == LOCATIONS:
        # Glance lets admins point an image at data elsewhere; here the data is the service's own copy.
        raise ReservedProperty(
            "Attribute 'locations' is read-only: the image data is kept by this service; import new "
            "data into a new image instead."
        )


def tags_change(image: Image, *, added: str | None = None, removed: str | None = None) -> Change:
    """PUT or DELETE /v2/images/{image_id}/tags/{tag} as the change of the image's tags it makes
    (NotFound for removing a tag the image does not have, as Glance answers)."""
    tags = list(image.tags)
    if removed is not None:
        if removed not in tags:
            raise NotFound(f"Tag {removed} not found on image {image.id}.")
        tags.remove(removed)
    if added is not None and added not in tags:
        tags.append(added)
    return Change(op="replace", path=("tags",), value=tags)


def may_modify(image: Image, caller: Caller) -> None:
    """Members change their own project's images only (another project's public or community image
    is visible but not theirs: Glance's 403)."""
    if not caller.can_see(image.owner):
        raise NotPermitted("You are not authorized to complete modify_image action.")


def apply_changes(
    image: Image, changes: Sequence[Change], caller: Caller, rules: ImportRules, moment: datetime
) -> Image:
    """The image after the changes, checked as a whole (400, 403, 409 or 413 when Glance would
    refuse it); Glance's import bookkeeping (os_glance_*) stays as it was."""
    may_modify(image, caller)
    document = image_document(image)
    for change in changes:
        _apply(document, change, caller)
    owner = document.pop("owner")
    fields = image_fields(document, rules)
    if image.status is not ImageStatus.QUEUED:
        for name in FORMATS:
            if fields[name] != getattr(image, name):
                raise NotPermitted(f"Attribute {name} can be only replaced for a queued image.")
    bookkeeping = {k: v for k, v in image.properties.items() if k.startswith(RESERVED_PROPERTY_PREFIX)}
    fields["properties"] = {**fields["properties"], **bookkeeping}
    # updated_at is what the conditional write compares: it must differ from the stored one.
    updated = max(moment, image.updated_at + timedelta(microseconds=1))
    return image.model_copy(update={**fields, "owner": owner, "updated_at": updated})


def image_document(image: Image) -> dict[str, Any]:
    """What a client may set on the image, as the image shows it: its fields and extra properties
    (Glance's os_glance_* bookkeeping left out)."""
    document: dict[str, Any] = {
        key: value for key, value in image.properties.items() if not key.startswith(RESERVED_PROPERTY_PREFIX)
    }
    document.update(
        {
            "name": image.name,
            "visibility": image.visibility,
            "protected": image.protected,
            "os_hidden": image.os_hidden,
            "min_disk": image.min_disk,
            "min_ram": image.min_ram,
            "tags": list(image.tags),
            "owner": image.owner,
            "disk_format": image.disk_format,
            "container_format": image.container_format,
        }
    )
    return document


def _apply(document: dict[str, Any], change: Change, caller: Caller) -> None:
    name = change.attribute
    exists = name in document
    if change.op == "remove":
        if name in ATTRIBUTES:
            raise NotPermitted(f"Property {name} may not be removed.")
        if not exists:
            raise PatchConflict(f"Property {name} does not exist.")
        del document[name]
        return
    if name == "owner" and not caller.is_admin:
        raise NotPermitted("Owner can't be updated by non admin.")
    if name == "owner" and (not isinstance(change.value, str) or not change.value.strip()):
        raise InvalidRequest("Invalid value for owner: expected a project id")
    if name == "visibility":
        check_publicize(change.value, caller.is_admin)
    if change.op == "replace" and not exists:
        raise PatchConflict(f"Property {name} does not exist.")
    if change.op == "add" and exists and change.dialect is PatchDialect.DRAFT_4:
        raise PatchConflict(f"Property {name} already present.")
    if name in ATTRIBUTES and name != "name" and change.value is None:
        raise InvalidRequest(f"Invalid value for {name}: null is not allowed")
    if name not in ATTRIBUTES and not isinstance(change.value, str):
        # Glance's image schema types every extra property as a string (null included: refused).
        raise InvalidRequest(f"Invalid value for property '{name}': expected a string")
    document[name] = change.value
