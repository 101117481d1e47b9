"""Glance 2.17's image and image-list schemas, as /v2/schemas/image(s) and /openapi.json serve them.

The properties (Glance's names, types and descriptions) are data: image_properties.json."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from imagetasks.config import Settings

# Glance's default format lists: its schema's enums come from its deployer's lists, these by default.
GLANCE_DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
GLANCE_CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")


@lru_cache(maxsize=1)
def _base_properties() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((Path(__file__).parent / "image_properties.json").read_text())
    return loaded


def image_properties(settings: Settings) -> dict[str, Any]:
    """The format enums are Glance's default lists plus any format this deployment allows beyond
    them, so every image the service made (whatever the parameters were then) still validates."""
    properties = copy.deepcopy(_base_properties())
    for name, defaults, allowed in (
        ("disk_format", GLANCE_DISK_FORMATS, settings.allowed_disk_formats),
        ("container_format", GLANCE_CONTAINER_FORMATS, settings.allowed_container_formats),
    ):
        properties[name]["enum"] = [None, *dict.fromkeys((*defaults, *allowed))]
    return properties


def image_schema_document(settings: Settings) -> dict[str, Any]:
    """Glance's image schema: permissive (extra properties are strings), with its links."""
    return {
        "name": "image",
        "properties": image_properties(settings),
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def images_schema_document(settings: Settings) -> dict[str, Any]:
    """Glance's image list schema: the image schema as items, and the page links."""
    return {
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image_schema_document(settings)},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


#: Glance's member schema (glance/api/v2/image_members.py): python-glanceclient builds its member
#: model from it before any member call.
MEMBER_PROPERTIES: dict[str, Any] = {
    "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
    "image_id": {
        "type": "string",
        "description": "An identifier for the image",
        "pattern": (
            "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
        ),
    },
    "created_at": {"type": "string", "description": "Date and time of image member creation"},
    "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
    "status": {
        "type": "string",
        "description": "The status of this image member",
        "enum": ["pending", "accepted", "rejected"],
    },
    "schema": {"readOnly": True, "type": "string"},
}


def member_schema_document() -> dict[str, Any]:
    return {"name": "member", "properties": copy.deepcopy(MEMBER_PROPERTIES)}


def members_schema_document() -> dict[str, Any]:
    return {
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member_schema_document()},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "describedby", "href": "{schema}"}],
    }
