"""Create-time checks of a task's `input`, one function per task type.

Everything that can be known when the task is created is refused then, with a 400 that says what
to fix; what can only be known by reading the data is checked by the workflow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict

from imagetasks.domain.errors import InvalidRequest

HEX_SHA512 = re.compile(r"^[0-9a-f]{128}$")
HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")


class ImportRules(BaseModel):
    model_config = ConfigDict(frozen=True)

    allowed_disk_formats: tuple[str, ...]
    allowed_container_formats: tuple[str, ...]
    conversion_format: str = ""


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
    scheme = urlparse(location).scheme.lower()
    if scheme == "file" or location.startswith("/"):
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
