"""Reading an uploaded object as an import task: key layout, metadata, defaults and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from imagetasks.domain.uploads import (
    EXTENSION_FORMATS,
    NotAnUpload,
    UploadedObject,
    UploadedVersion,
    UploadKey,
    disk_format_from_name,
    metadata_properties,
    parse_upload_key,
    plan_import,
    plan_unreadable,
    unquoted_etag,
    upload_task_id,
)

BUCKET = "uploads-bucket"


def uploaded(key: str, *, size: int = 1024, metadata: dict[str, str] | None = None) -> UploadedObject:
    return UploadedObject(bucket=BUCKET, key=key, size=size, metadata=metadata or {})


def plan_for(key: str, **kwargs: Any) -> Any:
    return plan_import(uploaded(key, **kwargs), parse_upload_key(key))


# ------------------------------------------------------------------ key layout
def test_key_gives_project_and_file_name() -> None:
    # Given a key in the uploads layout
    key = "uploads/project-a/cirros 0.6.2.qcow2"

    # When it is parsed
    where = parse_upload_key(key)

    # Then the project owns it and the rest is the file name
    assert where == UploadKey(project_id="project-a", file_name="cirros 0.6.2.qcow2")


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("images/project-a/disk.qcow2", "not under uploads/"),
        ("uploads/disk.qcow2", "has no project"),
        ("uploads//disk.qcow2", "has no project"),
        ("uploads/ /disk.qcow2", "has no project"),
        ("uploads/../disk.qcow2", "valid project id"),
        ("uploads/./disk.qcow2", "valid project id"),
        ("uploads/proj\nect/disk.qcow2", "valid project id"),
        (f"uploads/{'p' * 256}/disk.qcow2", "valid project id"),
        ("uploads/project-a/", "is a folder"),
        ("uploads/project-a/sub/", "is a folder"),
        ("uploads/project-a/../project-b/disk.qcow2", "'..'"),
        ("uploads/project-a/sub//disk.qcow2", "empty"),
    ],
)
def test_keys_without_a_trustworthy_owner_are_not_uploads(key: str, why: str) -> None:
    # Given a key that names no project we can trust, or no file
    # When it is parsed
    with pytest.raises(NotAnUpload) as refused:
        parse_upload_key(key)

    # Then the reason says what is wrong with it
    assert why in refused.value.message


# ------------------------------------------------------------------ task id
def test_task_id_is_stable_for_one_event_and_differs_for_another() -> None:
    # Given the identity of one uploaded object
    first = upload_task_id(BUCKET, "uploads/p/a.qcow2", "v1", "etag-1", "0065F2D3E9B7A1C2D4")

    # When the same event, a new version of the key, new data without versions, the same data
    # uploaded again (a new sequencer), and another key give their ids
    again = upload_task_id(BUCKET, "uploads/p/a.qcow2", "v1", "etag-1", "0065F2D3E9B7A1C2D4")
    overwritten = upload_task_id(BUCKET, "uploads/p/a.qcow2", "v2", "etag-2", "0065F2D3E9B7A1C2FF")
    new_data = upload_task_id(BUCKET, "uploads/p/a.qcow2", None, "etag-2", None)
    same_data_again = upload_task_id(BUCKET, "uploads/p/a.qcow2", "v1", "etag-1", "0065F2D3E9B7A1C300")
    other = upload_task_id(BUCKET, "uploads/p/b.qcow2", "v1", "etag-1", "0065F2D3E9B7A1C2D4")

    # Then only the same event gives the same id
    assert first == again
    assert len({first, overwritten, new_data, same_data_again, other}) == 5


def test_the_task_input_names_the_object_imported() -> None:
    # Given an upload S3 describes with its ETag and version
    upload = UploadedObject(
        bucket=BUCKET, key="uploads/p/a.qcow2", size=1024, metadata={}, etag="9b2c", version_id="v7"
    )

    # When it is planned as an import
    plan = plan_import(upload, parse_upload_key(upload.key))

    # Then the task reads (and later removes) only that object
    assert plan.refusal is None
    assert (plan.task_input["source_etag"], plan.task_input["source_version_id"]) == ("9b2c", "v7")
    assert UploadedVersion.of_task(plan.task_input) == UploadedVersion(etag="9b2c", version_id="v7")
    assert UploadedVersion.of_task({"source_etag": 7}) == UploadedVersion()


@pytest.mark.parametrize(
    ("etag", "expected"), [('"9b2c-2"', "9b2c-2"), ("9b2c", "9b2c"), ('""', None), (None, None)]
)
def test_etags_are_compared_without_s3s_quotes(etag: str | None, expected: str | None) -> None:
    assert unquoted_etag(etag) == expected


# ------------------------------------------------------------------ formats and metadata
@pytest.mark.parametrize(("name", "expected"), [*EXTENSION_FORMATS.items(), ("DISK.QCOW2", "qcow2")])
def test_extension_gives_disk_format(name: str, expected: str) -> None:
    assert disk_format_from_name(f"disk{name}" if name.startswith(".") else name) == expected


def test_unknown_extension_gives_no_format() -> None:
    assert disk_format_from_name("disk.tar.gz") is None


def test_metadata_names_become_property_names_and_ownership_is_dropped() -> None:
    # Given metadata as head_object returns it (lower-case, without x-amz-meta-)
    metadata = {
        "os-distro": "ubuntu",
        "hw_disk_bus": "virtio",
        "owner": "project-b",
        "project-id": "project-b",
    }

    # When it is read as image properties
    properties, dropped = metadata_properties(metadata)

    # Then names use underscores, and ownership-like names are dropped, not passed on
    assert properties == {"os_distro": "ubuntu", "hw_disk_bus": "virtio"}
    assert sorted(dropped) == ["owner", "project-id"]


def test_rfc2047_encoded_metadata_values_are_decoded() -> None:
    # Given a non-ASCII value as S3 returns it
    properties, _ = metadata_properties({"name": "=?UTF-8?B?w6l0w6kgaW1hZ2U=?="})

    # Then the property holds the text the uploader wrote
    assert properties == {"name": "été image"}


# ------------------------------------------------------------------ plans
def test_plan_from_file_name_alone() -> None:
    # Given a qcow2 upload without metadata
    # When it is planned
    plan = plan_for("uploads/project-a/cirros.qcow2")

    # Then the defaults come from the file name, and the input says where the image comes from
    assert plan.refusal is None and plan.owner == "project-a"
    assert plan.task_input == {
        "import_from": f"s3://{BUCKET}/uploads/project-a/cirros.qcow2",
        "import_from_format": "qcow2",
        "image_properties": {"name": "cirros.qcow2", "container_format": "bare", "disk_format": "qcow2"},
        "source": "s3-upload",
    }


def test_metadata_overrides_defaults_and_adds_properties_and_checksums() -> None:
    # Given an upload whose metadata describes the image
    metadata = {
        "disk-format": "raw",
        "container-format": "ovf",
        "name": "Ubuntu 24.04",
        "os-distro": "ubuntu",
        "checksum": "0" * 32,
    }

    # When it is planned
    plan = plan_for("uploads/project-a/noble.qcow2", metadata=metadata)

    # Then the metadata wins over the extension, extras stay properties, and the checksum is expected
    assert plan.refusal is None
    assert plan.task_input["import_from_format"] == "raw"
    assert plan.task_input["image_properties"] == {
        "name": "Ubuntu 24.04",
        "container_format": "ovf",
        "disk_format": "raw",
        "os_distro": "ubuntu",
    }
    assert plan.task_input["checksum"] == "0" * 32


def test_metadata_cannot_change_the_owner() -> None:
    # Given metadata that claims another project
    metadata = {"owner": "project-b", "project-id": "project-b", "tenant-id": "project-b"}

    # When it is planned
    plan = plan_for("uploads/project-a/disk.raw", metadata=metadata)

    # Then the owner is the key's project, and the claims are nowhere in the task input
    assert plan.owner == "project-a"
    assert "project-b" not in repr(plan.task_input)
    assert set(plan.ignored_metadata) == {"owner", "project-id", "tenant-id"}


@pytest.mark.parametrize(
    ("key", "kwargs", "message"),
    [
        ("uploads/project-a/disk.qcow2", {"size": 0}, "is empty (0 bytes)"),
        ("uploads/project-a/disk.bin", {}, "x-amz-meta-disk-format"),
        ("uploads/project-a/sub/disk.qcow2", {}, "sub-folder"),
        ("uploads/project-a/disk#1.qcow2", {}, "'?', '#'"),
        ("uploads/project-a/disk.qcow2", {"metadata": {"name": "=?UTF-8?Q?=FF?="}}, "x-amz-meta-name"),
        ("uploads/project-a/disk.qcow2", {"metadata": {"visibility": "public"}}, "only an admin may make"),
    ],
)
def test_uploads_the_owner_must_fix_are_refused_with_a_message(
    key: str, kwargs: dict[str, Any], message: str
) -> None:
    # Given an upload with a problem its owner can fix
    # When it is planned
    plan = plan_for(key, **kwargs)

    # Then the owner still gets a task, refused with a message that says what to do
    assert plan.owner == "project-a"
    assert plan.refusal is not None and message in plan.refusal
    assert plan.task_input["import_from"] == f"s3://{BUCKET}/{key}"


def test_unknown_extension_with_disk_format_metadata_is_accepted() -> None:
    plan = plan_for("uploads/project-a/disk.bin", metadata={"disk-format": "vmdk"})

    assert plan.refusal is None and plan.task_input["import_from_format"] == "vmdk"


def test_unreadable_object_plan_is_refused_for_the_keys_owner() -> None:
    # Given an object S3 would not describe
    where = parse_upload_key("uploads/project-a/disk.qcow2")

    # When it is planned
    plan = plan_unreadable(BUCKET, "uploads/project-a/disk.qcow2", where, "The upload no longer exists")

    # Then the owner gets a failed task saying so
    assert plan.owner == "project-a"
    assert plan.refusal == "The upload no longer exists; upload the image again."


@pytest.mark.parametrize("compressed", [".gz", ".xz", ".bz2", ".zst", ".GZ"])
def test_a_compressed_upload_is_named_after_its_image(compressed: str) -> None:
    # The data is decompressed by its first bytes; the name only tells the disk format inside.
    assert disk_format_from_name(f"disk.qcow2{compressed}") == "qcow2"
    assert disk_format_from_name(f"disk.img{compressed}") == "raw"
    assert disk_format_from_name(f"disk{compressed}") is None


def test_an_upload_over_the_image_size_limit_fails_at_once_as_too_large() -> None:
    key = "uploads/project-a/huge.raw"
    GiB = 1024**3

    plan = plan_import(uploaded(key, size=150 * GiB + 1), parse_upload_key(key), max_image_size=100 * GiB)
    within = plan_import(uploaded(key, size=100 * GiB), parse_upload_key(key), max_image_size=100 * GiB)

    assert plan.refusal == (
        "The upload uploads/project-a/huge.raw is 151 GiB; this cloud imports images of at most 100 GiB."
    )
    assert plan.refusal_code == "too_large"
    assert within.refusal is None


def test_refusals_carry_their_error_code() -> None:
    assert plan_for("uploads/project-a/disk.qcow2", size=0).refusal_code == "image_rejected"
    assert plan_for("uploads/project-a/disk.unknown").refusal_code == "invalid_input"
    unreadable = plan_unreadable(
        BUCKET, "uploads/project-a/d.raw", parse_upload_key("uploads/project-a/d.raw"), "gone"
    )
    assert unreadable.refusal_code == "source_unavailable"
