"""Create-time checks of a task's `input`, one function per task type.

Everything that can be known when the task is created is refused then, with a 400 that says what
to fix; what can only be known by reading the data is checked by the workflow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from imagetasks.domain.errors import InvalidRequest, LimitExceeded, ReservedProperty
from imagetasks.domain.images import CORE_FIELDS, MAX_NAME_LENGTH, glance_fields
from imagetasks.domain.import_filter import is_local_location
from imagetasks.domain.user_text import check_text, shown

HEX_SHA512 = re.compile(r"^[0-9a-f]{128}$")
HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")

# Glance's limits on what an image carries (docs/decisions.md, "Hostile input"): a name of at most
# MAX_NAME_LENGTH characters, at most 128 extra properties (Glance's default image_property_quota),
# keys of at most 255 characters (Glance's check), values of at most 65535 (Glance's TEXT column).
# Glance reserves the os_glance prefix for itself.
MAX_EXTRA_PROPERTIES = 128
MAX_PROPERTY_KEY_LENGTH = 255
MAX_PROPERTY_VALUE_LENGTH = 65535
RESERVED_PROPERTY_PREFIX = "os_glance"
_FORMAT_FIELDS = ("disk_format", "container_format")


class ImportRules(BaseModel):
    model_config = ConfigDict(frozen=True)

    allowed_disk_formats: tuple[str, ...]
    allowed_container_formats: tuple[str, ...]
    conversion_format: str = ""


def check_image_properties(properties: Mapping[str, Any]) -> None:
    """Refuse image properties Glance would refuse, or that could not be stored: a name that is not
    a string of at most 255 characters, reserved or over-long keys, extra properties that are not
    strings, too long, or too many."""
    for key in properties:
        if not key:
            raise InvalidRequest("Image property names in image_properties must not be empty")
        check_text(f"the name of image property '{shown(key)}'", key)
        if len(key) > MAX_PROPERTY_KEY_LENGTH:
            raise InvalidRequest(
                f"Custom property should not be greater than {MAX_PROPERTY_KEY_LENGTH} characters."
            )
        if key.startswith(RESERVED_PROPERTY_PREFIX):
            raise ReservedProperty(f"Attribute '{key}' is reserved.")
    name = properties.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidRequest(f"Image name in image_properties must be a string, not {_json_type(name)}")
    if isinstance(name, str):
        check_text("name", name)
    if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(
            f"Image name in image_properties is {len(name)} characters long; "
            f"at most {MAX_NAME_LENGTH} are allowed"
        )
    # A property set to null is dropped (as Glance drops it): it does not count.
    extra = [
        key
        for key, value in properties.items()
        if key not in CORE_FIELDS and key not in _FORMAT_FIELDS and value is not None
    ]
    if len(extra) > MAX_EXTRA_PROPERTIES:
        raise LimitExceeded(
            "The limit has been exceeded on the number of allowed image properties. "
            f"Attempted: {len(extra)}, Maximum: {MAX_EXTRA_PROPERTIES}"
        )
    for key in extra:
        value = properties[key]
        if not isinstance(value, str):
            raise InvalidRequest(
                f"Image property '{key}' in image_properties must be a string, not {_json_type(value)}"
            )
        if len(value) > MAX_PROPERTY_VALUE_LENGTH:
            raise InvalidRequest(
                f"Image property '{key}' in image_properties is {len(value)} characters long; "
                f"at most {MAX_PROPERTY_VALUE_LENGTH} are allowed"
            )
        check_text(f"image property '{key}'", value, free_text=True)


#: A task is one DynamoDB item (at most 400 KB): its input, as stored (JSON, non-ASCII characters
#: escaped), may take this many bytes; the rest is the task's own fields and result.
MAX_STORED_INPUT_BYTES = 320 * 1024


def check_stored_input_size(task_input: Mapping[str, Any]) -> None:
    """A 400 naming the limit for an input too large to be stored with its task."""
    stored = len(json.dumps(task_input))
    if stored > MAX_STORED_INPUT_BYTES:
        raise InvalidRequest(
            f"The task's input takes {stored} bytes as stored (non-ASCII characters take 6 each); "
            f"this cloud stores at most {MAX_STORED_INPUT_BYTES} bytes of input per task"
        )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else "null"


def check_formats(properties: Mapping[str, Any], rules: ImportRules) -> None:
    disk_format = properties.get("disk_format")
    if not isinstance(disk_format, str) or disk_format not in rules.allowed_disk_formats:
        raise InvalidRequest(
            f"Invalid disk_format {disk_format!r} in image_properties; "
            f"this cloud accepts: {', '.join(rules.allowed_disk_formats)}"
        )
    container_format = properties.get("container_format")
    if not isinstance(container_format, str) or container_format not in rules.allowed_container_formats:
        raise InvalidRequest(
            f"Invalid container_format {container_format!r} in image_properties; "
            f"this cloud accepts: {', '.join(rules.allowed_container_formats)}"
        )


def validate_import_input(
    task_input: Mapping[str, Any],
    owner: str,
    rules: ImportRules,
    check_location: Callable[[str, str], None],
) -> None:
    """Refuse an import that cannot succeed. `check_location(url, owner)` is the deployment's import
    filter (it raises InvalidRequest with the filter's message)."""
    location = task_input.get("import_from")
    if not isinstance(location, str) or not location.strip():
        raise InvalidRequest("Invalid location: None")
    if is_local_location(location):
        raise InvalidRequest(
            "File based imports are not allowed. Please use a non-local source of image data."
        )
    check_location(location, owner)
    for key in ("import_from_format", "image_properties"):
        if key not in task_input:
            raise InvalidRequest(f"Input does not contain '{key}' field")
    properties = task_input["image_properties"]
    if not isinstance(properties, dict):
        raise InvalidRequest("image_properties must be an object of image properties")
    check_image_properties(properties)
    glance_fields(properties)  # min_disk, min_ram, tags...: refused now, not when the task runs
    check_formats(properties, rules)
    source_format = task_input["import_from_format"]
    if not isinstance(source_format, str) or source_format not in rules.allowed_disk_formats:
        raise InvalidRequest(
            f"Invalid import_from_format {source_format!r}; "
            f"this cloud accepts: {', '.join(rules.allowed_disk_formats)}"
        )
    if not rules.conversion_format and source_format != properties["disk_format"]:
        raise InvalidRequest(
            f"import_from_format ({source_format}) and image_properties.disk_format "
            f"({properties['disk_format']}) differ, and this cloud does not convert images on import; "
            "use a convert task after the import"
        )
    check_expected_checksums(task_input)


def check_expected_checksums(task_input: Mapping[str, Any]) -> None:
    sha512 = task_input.get("os_hash_value")
    if sha512 is not None and (not isinstance(sha512, str) or not HEX_SHA512.match(sha512.lower())):
        raise InvalidRequest("os_hash_value must be the image's sha512 as 128 hexadecimal digits")
    md5 = task_input.get("checksum")
    if md5 is not None and (not isinstance(md5, str) or not HEX_MD5.match(md5.lower())):
        raise InvalidRequest("checksum must be the image's md5 as 32 hexadecimal digits")
