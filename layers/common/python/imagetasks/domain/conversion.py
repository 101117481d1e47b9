"""What convert and export tasks accept, checked when the task is created.

Everything knowable without reading the image's data is refused then with a 400: the image must
exist, belong to the caller's project and be active, and the target must be a disk format qemu-img
can write. An image the caller cannot see gets exactly the text of one that does not exist, so a
400 never tells anyone that another project's image id is real.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.images import MAX_NAME_LENGTH as MAX_IMAGE_NAME_LENGTH
from imagetasks.domain.images import Image, ImageStatus
from imagetasks.domain.runners import RunnerLimits

#: Glance disk formats qemu-img can write, with qemu-img's name for each.
TARGET_FORMATS: dict[str, str] = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "vdi": "vdi",
}
#: Glance disk formats qemu-img can read. iso and the Amazon kernel/ramdisk/machine images are
#: plain bytes to qemu-img, so it reads them as raw.
SOURCE_FORMATS: dict[str, str] = {**TARGET_FORMATS, "iso": "raw", "ami": "raw", "ari": "raw", "aki": "raw"}
#: qemu-img options per target. streamOptimized is the one-file, compressed VMDK that VMware,
#: OVA packages and cloud importers take; monolithicSparse (qemu's default) is less portable.
TARGET_OPTIONS: dict[str, tuple[str, ...]] = {"vmdk": ("subformat=streamOptimized",)}

ImageLookup = Callable[[str], Image | None]
#: Whether a project (not the image's owner) accepted the image's sharing: it may then use it too.
SharingCheck = Callable[[Image, str], bool]

MiB = 1024**2
GiB = 1024**3
#: Working space kept free for the runtime, qemu-img's own scratch and the rounding of estimates.
WORK_MARGIN_BYTES = 256 * MiB


def expected_output_size(virtual_size: int, target: str) -> int:
    """An upper bound of the bytes qemu-img writes when rewriting a disk of ``virtual_size`` bytes
    as ``target``.

    Raw is the whole virtual disk, and so are vdi and fixed vhd; sparse formats (qcow2, vmdk) write
    only the allocated data, but how much of the disk is allocated is not known before converting,
    and a small compressed source can expand to its whole virtual size (a 651 KB qcow2 becomes a
    268 MB vdi). So every target counts the whole virtual disk, plus its tables and headers.
    """
    if target == "raw":
        return virtual_size
    return virtual_size + virtual_size // 128 + 16 * MiB  # tables and headers: about 1% at most


def whole_size(n: int, *, round_up: bool) -> str:
    """``n`` bytes in whole GiB, or whole MiB below 1 GiB or when GiB would round a limit."""
    unit, name = (GiB, "GiB") if n >= GiB else (MiB, "MiB")
    if not round_up and n % unit:
        unit, name = MiB, "MiB"
    count = -(-n // unit) if round_up else n // unit
    return f"{count} {name}"


def check_working_space(
    image: Image,
    target: str,
    working_space: int | RunnerLimits,
    kind: str,
    virtual_size: int | None = None,
) -> None:
    """Refuse, before any work, an image whose data and converted copy will not fit the worker.

    ``working_space`` is a number of bytes (at create time: the most any runner offers), or the
    limits of the runner this code runs on, which hand work that only the container runner can
    hold over to it (NeedsContainer). ``virtual_size`` is the size read from the data itself when
    known (it prevails over the image record's); with neither, the image's size stands for it, as
    for raw data.
    """
    size = image.size or 0  # only active images (which have a size) are converted or exported
    virtual = virtual_size or image.virtual_size or size
    needed = size + expected_output_size(virtual, target) + WORK_MARGIN_BYTES
    if isinstance(working_space, RunnerLimits):
        working_space_bytes = working_space.working_space(needed)
    else:
        working_space_bytes = working_space
    if needed > working_space_bytes:
        raise InvalidRequest(
            f"Converting this image to {target} needs {whole_size(needed, round_up=True)} of working "
            f"space (the {whole_size(size, round_up=True)} image and a copy as large as its "
            f"{whole_size(virtual, round_up=True)} virtual disk); this cloud allows "
            f"{whole_size(working_space_bytes, round_up=False)} for {kind} tasks"
        )


class ConvertInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image_id: str
    disk_format: str
    container_format: str | None = None
    name: str | None = None


class ExportInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image_id: str
    disk_format: str | None = None


def _string_field(task_input: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = task_input.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"Input does not contain '{key}' field")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"'{key}' in input must be a non-empty string")
    return value


def _refuse_unknown_fields(task_input: Mapping[str, Any], model: type[BaseModel], task_type: str) -> None:
    # A misspelt optional field ("diskformat") would otherwise be ignored silently and the task
    # would do something the user did not ask for.
    unknown = sorted(set(task_input) - set(model.model_fields))
    if unknown:
        raise InvalidRequest(
            f"Unknown field '{unknown[0]}' in input; {task_type} accepts: {', '.join(model.model_fields)}"
        )


def _visible_active_image(
    image_id: str, owner: str, find_image: ImageLookup, verb: str, shared_with: SharingCheck | None
) -> Image:
    image = find_image(image_id)
    if image is None or (
        image.owner != owner and not (shared_with is not None and shared_with(image, owner))
    ):
        raise InvalidRequest(f"No image found with ID {image_id}")
    if image.status is not ImageStatus.ACTIVE:
        raise InvalidRequest(f"Image {image_id} is {image.status.value}; only active images can be {verb}")
    return image


def convert_targets(allowed_disk_formats: tuple[str, ...]) -> tuple[str, ...]:
    """Formats a convert may produce: what qemu-img writes and this cloud accepts as images."""
    return tuple(f for f in TARGET_FORMATS if f in allowed_disk_formats)


def validate_convert_input(
    task_input: Mapping[str, Any],
    owner: str,
    find_image: ImageLookup,
    allowed_disk_formats: tuple[str, ...],
    allowed_container_formats: tuple[str, ...],
    working_space_bytes: int | None = None,
    *,
    shared_with: SharingCheck | None = None,
) -> ConvertInput:
    """Refuse a convert that cannot succeed (InvalidRequest); return the parsed input otherwise.
    With `working_space_bytes` (at create time), an image too large for the worker is refused too."""
    _refuse_unknown_fields(task_input, ConvertInput, "convert")
    image_id = _string_field(task_input, "image_id", required=True)
    target = _string_field(task_input, "disk_format", required=True)
    container_format = _string_field(task_input, "container_format", required=False)
    name = task_input.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidRequest("'name' in input must be a string")
    if isinstance(name, str) and len(name) > MAX_IMAGE_NAME_LENGTH:
        raise InvalidRequest(
            f"'name' in input is {len(name)} characters long; at most {MAX_IMAGE_NAME_LENGTH} are allowed"
        )
    assert image_id is not None and target is not None  # required=True above
    image = _visible_active_image(image_id, owner, find_image, "converted", shared_with)
    targets = convert_targets(allowed_disk_formats)
    if target not in targets:
        raise InvalidRequest(
            f"Cannot convert to disk_format {target!r}; this cloud converts to: {', '.join(targets)}"
        )
    if image.disk_format not in SOURCE_FORMATS:
        raise InvalidRequest(f"Images in disk_format {image.disk_format} cannot be converted")
    if target == image.disk_format:
        raise InvalidRequest(f"Image {image_id} is already {target}; ask for another disk_format")
    if container_format is not None and container_format not in allowed_container_formats:
        raise InvalidRequest(
            f"Invalid container_format {container_format!r}; "
            f"this cloud accepts: {', '.join(allowed_container_formats)}"
        )
    if working_space_bytes is not None:
        check_working_space(image, target, working_space_bytes, "convert")
    return ConvertInput(image_id=image_id, disk_format=target, container_format=container_format, name=name)


def validate_export_input(
    task_input: Mapping[str, Any],
    owner: str,
    find_image: ImageLookup,
    working_space_bytes: int | None = None,
    *,
    shared_with: SharingCheck | None = None,
) -> ExportInput:
    """Refuse an export that cannot succeed (InvalidRequest); return the parsed input otherwise.
    With `working_space_bytes` (at create time), a conversion too large for the worker is refused
    too (an export in the image's own format is a copy and needs no working space)."""
    _refuse_unknown_fields(task_input, ExportInput, "export")
    image_id = _string_field(task_input, "image_id", required=True)
    target = _string_field(task_input, "disk_format", required=False)
    assert image_id is not None
    image = _visible_active_image(image_id, owner, find_image, "exported", shared_with)
    if target is not None and target != image.disk_format:
        if target not in TARGET_FORMATS:
            raise InvalidRequest(
                f"Cannot export as disk_format {target!r}; supported targets: {', '.join(TARGET_FORMATS)}"
            )
        if image.disk_format not in SOURCE_FORMATS:
            raise InvalidRequest(
                f"Images in disk_format {image.disk_format} cannot be converted; export it as it is"
            )
        if working_space_bytes is not None:
            check_working_space(image, target, working_space_bytes, "export")
    return ExportInput(image_id=image_id, disk_format=target)
