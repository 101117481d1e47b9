"""A task's `input` from the options of `openstack image task create`, checked for what each type takes.

The shapes are the service's (docs/api.md, "Task types"); the service checks the values themselves
(formats, URLs, properties), so here only which options belong to which type is decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class InputError(ValueError):
    """The options do not make a task of the type asked for; the message names what to change."""


@dataclass(frozen=True)
class CreateOptions:
    image: str | None = None
    disk_format: str | None = None
    container_format: str | None = None
    name: str | None = None
    import_from: str | None = None
    import_from_format: str | None = None
    checksum: str | None = None
    os_hash_value: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)


#: Option (as typed) → the attribute it fills, for messages.
_FLAGS = {
    "image": "--image",
    "disk_format": "--disk-format",
    "container_format": "--container-format",
    "name": "--name",
    "import_from": "--import-from",
    "import_from_format": "--import-from-format",
    "checksum": "--checksum",
    "os_hash_value": "--os-hash-value",
    "properties": "--property",
}

_ACCEPTED = {
    "import": {
        "import_from",
        "import_from_format",
        "disk_format",
        "container_format",
        "name",
        "checksum",
        "os_hash_value",
        "properties",
    },
    "convert": {"image", "disk_format", "container_format", "name"},
    "export": {"image", "disk_format"},
}
_REQUIRED = {
    "import": ("import_from", "import_from_format"),
    "convert": ("image", "disk_format"),
    "export": ("image",),
}


def _article(word: str) -> str:
    return "An" if word[0] in "aeiou" else "A"


def build_input(task_type: str, options: CreateOptions) -> dict[str, Any]:
    if task_type not in _ACCEPTED:
        raise InputError(f"Unknown task type {task_type!r}: use import, convert or export")
    given = {name for name in _FLAGS if getattr(options, name)}
    refused = sorted(_FLAGS[name] for name in given - _ACCEPTED[task_type])
    if refused:
        raise InputError(f"{_article(task_type)} {task_type} task does not take {', '.join(refused)}")
    missing = [_FLAGS[name] for name in _REQUIRED[task_type] if not getattr(options, name)]
    if missing:
        raise InputError(f"{_article(task_type)} {task_type} task needs {' and '.join(missing)}")

    if task_type == "import":
        assert options.import_from_format is not None  # checked above; for the type checker
        image_properties: dict[str, Any] = {
            **options.properties,
            "disk_format": options.disk_format or options.import_from_format,
            "container_format": options.container_format or "bare",
        }
        if options.name:
            image_properties["name"] = options.name
        task_input: dict[str, Any] = {
            "import_from": options.import_from,
            "import_from_format": options.import_from_format,
            "image_properties": image_properties,
        }
        if options.checksum:
            task_input["checksum"] = options.checksum
        if options.os_hash_value:
            task_input["os_hash_value"] = options.os_hash_value
        return task_input

    task_input = {"image_id": options.image}
    for name in ("disk_format", "container_format", "name"):
        value = getattr(options, name)
        if value:
            task_input[name] = value
    return task_input
