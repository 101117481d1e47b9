"""Create-time checks of convert and export input, and the working-space estimate (pure domain)."""

from __future__ import annotations

from typing import Any

import pytest

from imagetasks.domain.conversion import (
    GiB,
    MiB,
    check_working_space,
    expected_output_size,
    validate_convert_input,
    validate_export_input,
    whole_size,
)
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.images import Image, new_image

OWNER = "project-a"
ALLOWED_DISK = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "ami", "ari", "aki")
ALLOWED_CONTAINER = ("bare", "ovf", "ova")
IMAGE_ID = "11111111-1111-4111-8111-111111111111"
OTHERS_ID = "22222222-2222-4222-8222-222222222222"


def image(image_id: str = IMAGE_ID, owner: str = OWNER, **changes: Any) -> Image:
    base = new_image(
        image_id=image_id,
        owner=owner,
        name="cirros",
        disk_format="qcow2",
        container_format="bare",
        size=20 * MiB,
        virtual_size=100 * MiB,
        checksum="0" * 32,
        os_hash_value="0" * 128,
        bucket="images",
        key=f"images/{image_id}",
        task_id="t",
    )
    return base.model_copy(update=changes)


class FakeImages:
    """The image lookup port: a dict."""

    def __init__(self, *images: Image) -> None:
        self.images = {i.id: i for i in images}

    def __call__(self, image_id: str) -> Image | None:
        return self.images.get(image_id)


LOOKUP = FakeImages(image(), image(OTHERS_ID, owner="project-b"))


def convert(task_input: dict[str, Any], owner: str = OWNER) -> Any:
    return validate_convert_input(task_input, owner, LOOKUP, ALLOWED_DISK, ALLOWED_CONTAINER)


# ------------------------------------------------------------------ convert
def test_a_convert_of_an_own_active_image_to_a_supported_format_passes() -> None:
    parsed = convert({"image_id": IMAGE_ID, "disk_format": "raw", "name": "flat", "container_format": "ova"})

    assert (parsed.image_id, parsed.disk_format, parsed.name, parsed.container_format) == (
        IMAGE_ID, "raw", "flat", "ova",
    )  # fmt: skip


@pytest.mark.parametrize("target", ["raw", "vmdk", "vhd", "vhdx", "vdi"])
def test_every_qemu_target_is_accepted(target: str) -> None:
    assert convert({"image_id": IMAGE_ID, "disk_format": target}).disk_format == target


@pytest.mark.parametrize("image_id", ["33333333-3333-4333-8333-333333333333", OTHERS_ID])
def test_unknown_and_other_projects_images_get_the_same_400(image_id: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        convert({"image_id": image_id, "disk_format": "raw"})

    assert refused.value.message == f"No image found with ID {image_id}"


@pytest.mark.parametrize(
    ("task_input", "message"),
    [
        ({"disk_format": "raw"}, "Input does not contain 'image_id' field"),
        ({"image_id": IMAGE_ID}, "Input does not contain 'disk_format' field"),
        ({"image_id": 7, "disk_format": "raw"}, "'image_id' in input must be a non-empty string"),
        (
            {"image_id": IMAGE_ID, "disk_format": "iso"},
            "Cannot convert to disk_format 'iso'; this cloud converts to: raw, qcow2, vmdk, vhd, vhdx, vdi",
        ),
        ({"image_id": IMAGE_ID, "disk_format": "qcow2"}, f"Image {IMAGE_ID} is already qcow2"),
        (
            {"image_id": IMAGE_ID, "disk_format": "raw", "container_format": "tar"},
            "Invalid container_format 'tar'",
        ),
        ({"image_id": IMAGE_ID, "disk_format": "raw", "name": 5}, "'name' in input must be a string"),
        ({"image_id": IMAGE_ID, "diskformat": "raw"}, "Unknown field 'diskformat' in input"),
    ],
)
def test_bad_convert_input_is_refused_with_a_message_to_act_on(
    task_input: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        convert(task_input)

    assert message in refused.value.message


def test_a_target_the_cloud_does_not_allow_is_not_offered() -> None:
    with pytest.raises(InvalidRequest) as refused:
        validate_convert_input(
            {"image_id": IMAGE_ID, "disk_format": "vdi"}, OWNER, LOOKUP, ("raw", "qcow2"), ()
        )

    assert refused.value.message == "Cannot convert to disk_format 'vdi'; this cloud converts to: raw, qcow2"


def test_an_image_format_qemu_cannot_read_cannot_be_converted() -> None:
    lookup = FakeImages(image(disk_format="ploop"))

    with pytest.raises(InvalidRequest, match="Images in disk_format ploop cannot be converted"):
        validate_convert_input({"image_id": IMAGE_ID, "disk_format": "raw"}, OWNER, lookup, ALLOWED_DISK, ())


# ------------------------------------------------------------------ export
def test_an_export_without_disk_format_keeps_the_images_own() -> None:
    parsed = validate_export_input({"image_id": IMAGE_ID}, OWNER, LOOKUP)

    assert parsed.disk_format is None


def test_an_export_to_the_images_own_format_needs_no_converter() -> None:
    lookup = FakeImages(image(disk_format="iso"))

    assert (
        validate_export_input({"image_id": IMAGE_ID, "disk_format": "iso"}, OWNER, lookup).disk_format
        == "iso"
    )


@pytest.mark.parametrize(
    ("task_input", "message"),
    [
        ({"image_id": OTHERS_ID}, f"No image found with ID {OTHERS_ID}"),
        ({}, "Input does not contain 'image_id' field"),
        (
            {"image_id": IMAGE_ID, "disk_format": "qed"},
            "Cannot export as disk_format 'qed'; supported targets: raw",
        ),
        (
            {"image_id": IMAGE_ID, "url": "x"},
            "Unknown field 'url' in input; export accepts: image_id, disk_format",
        ),
    ],
)
def test_bad_export_input_is_refused(task_input: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validate_export_input(task_input, OWNER, LOOKUP)

    assert message in refused.value.message


# ------------------------------------------------------------------ working space
def test_raw_output_is_the_whole_virtual_disk() -> None:
    assert expected_output_size(20 * GiB, "raw") == 20 * GiB


@pytest.mark.parametrize("target", ["qcow2", "vmdk", "vhd", "vhdx", "vdi"])
def test_every_other_output_counts_the_whole_virtual_disk_plus_tables(target: str) -> None:
    # A small compressed source can expand to its whole virtual disk: a 651 KB qcow2 became a
    # 268 MB vdi. Nothing smaller than the virtual size can be assumed.
    size = expected_output_size(20 * GiB, target)

    assert 20 * GiB < size < 20 * GiB + 200 * MiB


def test_an_image_that_fits_passes_and_one_that_does_not_is_refused_with_whole_sizes() -> None:
    space = 10 * GiB
    check_working_space(image(size=1 * GiB, virtual_size=4 * GiB), "raw", space, "convert")

    with pytest.raises(InvalidRequest) as refused:
        check_working_space(image(size=3 * GiB, virtual_size=40 * GiB), "raw", space, "export")

    assert refused.value.message == (
        "Converting this image to raw needs 44 GiB of working space (the 3 GiB image and a copy as "
        "large as its 40 GiB virtual disk); this cloud allows 10 GiB for export tasks"
    )


def test_a_small_file_with_a_large_virtual_disk_is_judged_by_its_virtual_size() -> None:
    # 651 KB of qcow2 announcing a 256 MiB disk, on a worker with 512 MiB: the vdi copy alone
    # is 256 MiB; with the margin it does not fit.
    small = image(size=651 * 1024, virtual_size=256 * MiB)

    with pytest.raises(InvalidRequest) as refused:
        check_working_space(small, "vdi", 512 * MiB, "convert")

    assert refused.value.message == (
        "Converting this image to vdi needs 531 MiB of working space (the 1 MiB image and a copy as "
        "large as its 256 MiB virtual disk); this cloud allows 512 MiB for convert tasks"
    )


def test_the_virtual_size_read_from_the_data_prevails_over_the_record() -> None:
    recorded_small = image(size=MiB, virtual_size=MiB)
    check_working_space(recorded_small, "raw", GiB, "convert")

    with pytest.raises(InvalidRequest, match="needs 3 GiB of working space"):
        check_working_space(recorded_small, "raw", GiB, "convert", virtual_size=2 * GiB + 1)


@pytest.mark.parametrize(
    ("size", "round_up", "shown"),
    [
        (10 * GiB, False, "10 GiB"),
        (10240 * MiB - 1, False, "10239 MiB"),  # a limit is never rounded up
        (10 * GiB + 1, True, "11 GiB"),  # a need is never rounded down
        (651 * 1024, True, "1 MiB"),
        (300 * MiB, False, "300 MiB"),
    ],
)
def test_sizes_are_whole_units(size: int, round_up: bool, shown: str) -> None:
    assert whole_size(size, round_up=round_up) == shown
