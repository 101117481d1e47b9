"""POST /v2/images: the body of an image record, checked as Glance checks it, becomes a `queued` image.

The record has no data: an interoperable import (POST /v2/images/{id}/import) fills it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from imagetasks.domain.errors import InvalidRequest, ReservedProperty
from imagetasks.domain.image_listing import VISIBILITIES
from imagetasks.domain.images import (
    CORE_FIELDS,
    MAX_NAME_LENGTH,
    Image,
    ImageStatus,
    check_indexed_values,
    check_publicize,
)
from imagetasks.domain.task_input import ImportRules, check_image_properties
from imagetasks.domain.user_text import MAX_INT32, check_text

# What a client may not set (Glance's answers: 403 "Attribute 'x' is read-only." / "... is reserved.").
READ_ONLY = frozenset(
    {
        "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "created_at",
        "updated_at", "self", "file", "schema", "direct_url", "locations",
    }
)  # fmt: skip
RESERVED = frozenset({"location", "deleted", "deleted_at"})
SETTABLE = frozenset(
    {
        "id", "name", "disk_format", "container_format", "visibility", "protected", "min_disk", "min_ram",
        "tags", "owner", "os_hidden",
    }
)  # fmt: skip


def check_settable(key: str) -> None:
    """Refuse a field the client may not set, with Glance's 403 text."""
    if key in READ_ONLY:
        raise ReservedProperty(f"Attribute '{key}' is read-only.")
    if key in RESERVED:
        raise ReservedProperty(f"Attribute '{key}' is reserved.")


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"Invalid value for {name}: {value!r} is not a boolean")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT32:
        raise InvalidRequest(
            f"Invalid value for {name}: {str(value)[:40]} is not an integer from 0 to {MAX_INT32}"
        )
    return value


def check_tags(value: Any) -> tuple[str, ...]:
    """Glance's tags: strings of 1 to 255 characters; also text (no control character, no lone
    surrogate)."""
    if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 255 for t in value):
        raise InvalidRequest("Invalid value for tags: expected a list of strings of 1 to 255 characters")
    for tag in value:
        check_text("tags", tag)
    return tuple(dict.fromkeys(value))


_tags = check_tags


def _format(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value is None:
        # Glance accepts an image without formats and asks for them at import time; here the import
        # is the only way an image gets data, so they are asked for now (docs/decisions.md).
        raise InvalidRequest(
            f"Image {name} is required: this cloud imports data only into images whose formats are "
            f"known ({', '.join(allowed)})"
        )
    if not isinstance(value, str) or value not in allowed:
        raise InvalidRequest(f"Invalid value {value!r} for {name}; this cloud accepts: {', '.join(allowed)}")
    return value


def image_fields(body: Mapping[str, Any], rules: ImportRules) -> dict[str, Any]:
    """The Image fields a create body (or a patched image document) sets; InvalidRequest (400),
    ReservedProperty (403) or LimitExceeded (413) for what Glance would refuse."""
    for key in body:
        check_settable(key)
    properties = {key: value for key, value in body.items() if key not in SETTABLE and value is not None}
    # Names, reserved prefixes, value types and lengths, the property count (Glance's limits).
    check_image_properties({**properties, "name": body.get("name")})
    fields: dict[str, Any] = {
        "name": body.get("name"),
        "disk_format": _format("disk_format", body.get("disk_format"), rules.allowed_disk_formats),
        "container_format": _format(
            "container_format", body.get("container_format"), rules.allowed_container_formats
        ),
        "properties": {key: str(value) for key, value in properties.items() if key not in CORE_FIELDS},
    }
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_LENGTH):
        raise InvalidRequest(
            f"Invalid value for name: expected a string of at most {MAX_NAME_LENGTH} characters"
        )
    visibility = body.get("visibility")
    if visibility is not None:
        if visibility not in VISIBILITIES:
            raise InvalidRequest(
                f"Invalid value {visibility!r} for visibility; one of {', '.join(VISIBILITIES)}"
            )
        fields["visibility"] = visibility
    for name_ in ("protected", "os_hidden"):
        if body.get(name_) is not None:
            fields[name_] = _flag(name_, body[name_])
    for name_ in ("min_disk", "min_ram"):
        if body.get(name_) is not None:
            fields[name_] = _count(name_, body[name_])
    if body.get("tags") is not None:
        fields["tags"] = _tags(body["tags"])
    check_indexed_values(fields.get("tags", ()), fields["properties"])
    return fields


def image_id_of(body: Mapping[str, Any]) -> str:
    """The id the client chose (a UUID, as Glance requires) or a new one."""
    chosen = body.get("id")
    if chosen is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(str(chosen)))
    except ValueError:
        raise InvalidRequest(f"Invalid value {chosen!r} for id: expected a UUID") from None


def queued_image(
    body: Mapping[str, Any], owner: str, may_choose_owner: bool, rules: ImportRules, moment: datetime
) -> Image:
    """The queued image a POST /v2/images body describes, owned by the caller's project (an admin
    may name another owner, or make it public)."""
    check_publicize(body.get("visibility"), may_choose_owner)
    chosen_owner = body.get("owner")
    if chosen_owner is not None and chosen_owner != owner:
        if not may_choose_owner:
            raise ReservedProperty(f"You are not permitted to create images owned by '{chosen_owner}'.")
        if not isinstance(chosen_owner, str) or not chosen_owner:
            raise InvalidRequest("Invalid value for owner: expected a project id")
        owner = chosen_owner
    return Image(
        id=image_id_of(body),
        status=ImageStatus.QUEUED,
        size=None,
        checksum=None,
        os_hash_algo=None,
        os_hash_value=None,
        owner=owner,
        created_at=moment,
        updated_at=moment,
        **image_fields(body, rules),
    )
