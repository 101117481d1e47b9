"""`openstack image task create`'s options → the task's input, as docs/api.md shapes it per type."""

from __future__ import annotations

import pytest
from imagetasks_client.inputs import CreateOptions, InputError, build_input

IMAGE = "1cc9fa82-2b2c-54cc-b3a9-861e0ff2b525"


def test_an_import_fills_the_image_properties_with_formats_name_and_properties() -> None:
    options = CreateOptions(
        import_from="https://images.source.invalid/disk.qcow2",
        import_from_format="qcow2",
        name="ubuntu",
        properties={"os_distro": "ubuntu", "visibility": "private"},
        checksum="0" * 32,
    )

    assert build_input("import", options) == {
        "import_from": "https://images.source.invalid/disk.qcow2",
        "import_from_format": "qcow2",
        "image_properties": {
            "name": "ubuntu",
            "disk_format": "qcow2",  # the source's format unless --disk-format says another
            "container_format": "bare",
            "os_distro": "ubuntu",
            "visibility": "private",
        },
        "checksum": "0" * 32,
    }


def test_a_convert_and_an_export_take_the_image_and_only_the_options_given() -> None:
    convert = build_input("convert", CreateOptions(image=IMAGE, disk_format="vmdk", name="as-vmdk"))
    export = build_input("export", CreateOptions(image=IMAGE))

    assert convert == {"image_id": IMAGE, "disk_format": "vmdk", "name": "as-vmdk"}
    assert export == {"image_id": IMAGE}


@pytest.mark.parametrize(
    ("task_type", "options", "message"),
    [
        ("convert", CreateOptions(image=IMAGE), "A convert task needs --disk-format"),
        ("import", CreateOptions(import_from="https://x/d"), "An import task needs --import-from-format"),
        ("export", CreateOptions(), "An export task needs --image"),
        (
            "export",
            CreateOptions(image=IMAGE, name="n", properties={"a": "b"}),
            "An export task does not take --name, --property",
        ),
        (
            "import",
            CreateOptions(image=IMAGE, import_from="u", import_from_format="raw"),
            "does not take --image",
        ),
        ("resize", CreateOptions(), "Unknown task type 'resize'"),
    ],
)
def test_options_that_make_no_task_of_the_type_say_which_to_change(
    task_type: str, options: CreateOptions, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        build_input(task_type, options)
