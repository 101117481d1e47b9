"""Glance's JSON patch of an image, read and applied (domain only: no table, no HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import InvalidRequest, LimitExceeded, NotFound, NotPermitted, ReservedProperty
from imagetasks.domain.image_patch import (
    PatchConflict,
    PatchDialect,
    apply_changes,
    parse_changes,
    patch_dialect,
    tags_change,
)
from imagetasks.domain.images import Image, ImageStatus
from imagetasks.domain.task_input import ImportRules

CREATED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
LATER = CREATED + timedelta(minutes=5)
RULES = ImportRules(allowed_disk_formats=("qcow2", "raw"), allowed_container_formats=("bare", "ovf"))
MEMBER = Caller(project_id="project-a", user_id="u", roles=("member",))
ADMIN = Caller(project_id="admin-project", user_id="a", roles=("admin", "member"))


def an_image(**fields: Any) -> Image:
    values: dict[str, Any] = {
        "id": "0b5c1e7e-9c1a-4d8e-8f0e-2a6f1d3c4b5a",
        "name": "cirros",
        "status": ImageStatus.ACTIVE,
        "disk_format": "qcow2",
        "container_format": "bare",
        "size": 1024,
        "checksum": "0" * 32,
        "os_hash_value": "0" * 128,
        "owner": "project-a",
        "tags": ("a", "b"),
        "created_at": CREATED,
        "updated_at": CREATED,
        "properties": {"os_distro": "cirros", "os_glance_failed_import": ""},
        "task_ids": ("task-1",),
    }
    values.update(fields)
    return Image(**values)


def patched(image: Image, body: list[dict[str, Any]], caller: Caller = MEMBER, **kw: Any) -> Image:
    dialect = kw.pop("dialect", PatchDialect.DRAFT_10)
    return apply_changes(image, parse_changes(body, dialect), caller, RULES, LATER)


# ------------------------------------------------------------------ reading the patch
@pytest.mark.parametrize(
    ("content_type", "dialect"),
    [
        ("application/openstack-images-v2.1-json-patch", PatchDialect.DRAFT_10),
        ("application/openstack-images-v2.1-json-patch; charset=UTF-8", PatchDialect.DRAFT_10),
        ("Application/OpenStack-Images-v2.0-JSON-Patch", PatchDialect.DRAFT_4),
        ("application/json", None),
        (None, None),
    ],
)
def test_the_content_type_names_the_patch_dialect(content_type: str | None, dialect: Any) -> None:
    assert patch_dialect(content_type) is dialect


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ({"op": "add"}, InvalidRequest, "Request body must be a JSON array of operation objects."),
        (["add"], InvalidRequest, "Operations must be JSON objects."),
        ([{"path": "/name", "value": "x"}], InvalidRequest, "Unable to find `op` in JSON Schema change."),
        ([{"op": "move", "path": "/name"}], InvalidRequest, "Invalid operation: `move`."),
        ([{"op": "add", "value": "x"}], InvalidRequest, "Unable to find 'path' in JSON Schema change"),
        ([{"op": "add", "path": "name", "value": "x"}], InvalidRequest, 'does not start with "/"'),
        ([{"op": "add", "path": "/a//b", "value": "x"}], InvalidRequest, 'contains adjacent "/"'),
        ([{"op": "add", "path": "/a~2", "value": "x"}], InvalidRequest, "recognized escape sequence"),
        ([{"op": "add", "path": "/tags/-", "value": "x"}], InvalidRequest, "Invalid JSON pointer"),
        ([{"op": "add", "path": 7, "value": "x"}], InvalidRequest, "must be a JSON pointer string"),
        ([{"op": "replace", "path": "/name"}], InvalidRequest, 'Operation "replace" requires a member'),
        (
            [{"op": "replace", "path": "/status", "value": "active"}],
            ReservedProperty,
            "'status' is read-only.",
        ),
        ([{"op": "remove", "path": "/checksum"}], ReservedProperty, "'checksum' is read-only."),
        ([{"op": "replace", "path": "/id", "value": "x"}], ReservedProperty, "'id' is read-only."),
        ([{"op": "add", "path": "/deleted", "value": "x"}], ReservedProperty, "'deleted' is reserved."),
        (
            [{"op": "add", "path": "/os_glance_import_task", "value": "x"}],
            ReservedProperty,
            "Attribute 'os_glance_import_task' is reserved.",
        ),
        (
            [{"op": "replace", "path": "/locations", "value": []}],
            ReservedProperty,
            "'locations' is read-only",
        ),
    ],
)
def test_a_patch_glance_refuses_is_refused_before_anything_is_applied(
    body: Any, error: type[Exception], message: str
) -> None:
    # When the body is read, Then Glance's error (400 or 403) with its text
    with pytest.raises(error) as raised:
        parse_changes(body, PatchDialect.DRAFT_10)
    assert message in str(raised.value)


def test_a_pointer_decodes_its_escapes() -> None:
    [change] = parse_changes([{"op": "add", "path": "/a~1b~0c", "value": "x"}], PatchDialect.DRAFT_10)

    assert change.attribute == "a/b~c"


def test_draft_4_names_the_operation_as_a_member() -> None:
    [change] = parse_changes([{"replace": "/name", "value": "x"}], PatchDialect.DRAFT_4)
    with pytest.raises(InvalidRequest, match="exactly one member"):
        parse_changes([{"value": "x"}], PatchDialect.DRAFT_4)
    with pytest.raises(InvalidRequest, match="only one member"):
        parse_changes([{"add": "/a", "remove": "/b"}], PatchDialect.DRAFT_4)

    assert (change.op, change.path, change.value) == ("replace", ("name",), "x")


# ------------------------------------------------------------------ applying it
def test_add_replace_and_remove_change_fields_tags_and_properties() -> None:
    # Given an active image of the caller's project
    image = an_image()
    # When a patch sets its fields, adds and replaces properties, removes one, and replaces its tags
    after = patched(
        image,
        [
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
            {"op": "replace", "path": "/os_distro", "value": "ubuntu"},
            {"op": "replace", "path": "/min_disk", "value": 2},
            {"op": "add", "path": "/min_ram", "value": 512},
            {"op": "replace", "path": "/protected", "value": True},
            {"op": "replace", "path": "/visibility", "value": "community"},
            {"op": "add", "path": "/os_hidden", "value": True},
            {"op": "replace", "path": "/tags", "value": ["c", "a", "c"]},
            {"op": "add", "path": "/gone", "value": "soon"},
            {"op": "remove", "path": "/gone"},
        ],
    )
    # Then the image has them all, keeps its import bookkeeping, data and history, and is newer
    assert (after.name, after.min_disk, after.min_ram, after.protected) == ("renamed", 2, 512, True)
    assert (after.visibility, after.os_hidden, after.tags) == ("community", True, ("c", "a"))
    assert after.properties == {"os_distro": "ubuntu", "hw_disk_bus": "virtio", "os_glance_failed_import": ""}
    assert (after.checksum, after.size, after.task_ids, after.status) == (
        image.checksum,
        image.size,
        image.task_ids,
        ImageStatus.ACTIVE,
    )
    assert after.created_at == CREATED and after.updated_at == LATER


def test_operations_apply_in_order_and_the_name_may_be_cleared() -> None:
    after = patched(
        an_image(),
        [
            {"op": "add", "path": "/note", "value": "first"},
            {"op": "replace", "path": "/note", "value": "second"},
            {"op": "replace", "path": "/name", "value": None},
        ],
    )

    assert after.properties["note"] == "second" and after.name is None


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (
            [{"op": "replace", "path": "/missing", "value": "x"}],
            PatchConflict,
            "Property missing does not exist.",
        ),
        ([{"op": "remove", "path": "/missing"}], PatchConflict, "Property missing does not exist."),
        ([{"op": "remove", "path": "/name"}], NotPermitted, "Property name may not be removed."),
        ([{"op": "remove", "path": "/tags"}], NotPermitted, "Property tags may not be removed."),
        (
            [{"op": "replace", "path": "/visibility", "value": "public"}],
            NotPermitted,
            "You are not authorized to complete publicize_image action.",
        ),
        (
            [{"op": "replace", "path": "/owner", "value": "project-b"}],
            NotPermitted,
            "Owner can't be updated by non admin.",
        ),
        (
            [{"op": "replace", "path": "/disk_format", "value": "raw"}],
            NotPermitted,
            "Attribute disk_format can be only replaced for a queued image.",
        ),
        ([{"op": "replace", "path": "/visibility", "value": "everyone"}], InvalidRequest, "for visibility"),
        ([{"op": "replace", "path": "/min_ram", "value": -1}], InvalidRequest, "Invalid value for min_ram"),
        ([{"op": "replace", "path": "/protected", "value": "yes"}], InvalidRequest, "for protected"),
        ([{"op": "replace", "path": "/protected", "value": None}], InvalidRequest, "null is not allowed"),
        ([{"op": "replace", "path": "/tags", "value": "a"}], InvalidRequest, "Invalid value for tags"),
        ([{"op": "replace", "path": "/name", "value": "n" * 256}], InvalidRequest, "at most 255"),
        ([{"op": "add", "path": "/os_distro", "value": 7}], InvalidRequest, "expected a string"),
        ([{"op": "add", "path": "/os_distro", "value": None}], InvalidRequest, "expected a string"),
    ],
)
def test_what_glance_refuses_to_apply_is_refused(body: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        patched(an_image(), body)

    assert message in str(raised.value)


def test_too_many_properties_is_a_limit_and_too_many_tags_and_properties_a_400() -> None:
    many = [{"op": "add", "path": f"/p{n}", "value": "x"} for n in range(129)]
    tags = [{"op": "replace", "path": "/tags", "value": [f"t{n}" for n in range(20)]}]

    with pytest.raises(LimitExceeded, match="Maximum: 128"):
        patched(an_image(properties={}), many)
    with pytest.raises(InvalidRequest, match="at most 20 together"):
        patched(an_image(), tags)


def test_draft_4_add_of_an_existing_property_is_a_conflict_and_draft_10_replaces_it() -> None:
    body4 = [{"add": "/os_distro", "value": "x"}]
    body10 = [{"op": "add", "path": "/os_distro", "value": "x"}]

    with pytest.raises(PatchConflict, match="Property os_distro already present"):
        patched(an_image(), body4, dialect=PatchDialect.DRAFT_4)
    assert patched(an_image(), body10).properties["os_distro"] == "x"


def test_admins_may_publish_and_give_an_image_to_another_project() -> None:
    after = patched(
        an_image(),
        [
            {"op": "replace", "path": "/visibility", "value": "public"},
            {"op": "replace", "path": "/owner", "value": "project-b"},
        ],
        ADMIN,
    )

    assert (after.visibility, after.owner) == ("public", "project-b")


def test_another_projects_image_cannot_be_changed_by_a_member() -> None:
    with pytest.raises(NotPermitted, match="You are not authorized to complete modify_image action"):
        patched(an_image(owner="project-b", visibility="public"), [{"op": "add", "path": "/x", "value": "y"}])


def test_a_queued_image_may_change_its_formats_to_allowed_ones_only() -> None:
    queued = an_image(status=ImageStatus.QUEUED, size=None, checksum=None, os_hash_value=None)

    after = patched(queued, [{"op": "replace", "path": "/disk_format", "value": "raw"}])
    with pytest.raises(InvalidRequest, match="Invalid value 'vhd' for disk_format"):
        patched(queued, [{"op": "replace", "path": "/disk_format", "value": "vhd"}])

    assert after.disk_format == "raw"


def test_a_change_in_the_same_microsecond_still_moves_updated_at() -> None:
    # The conditional write compares updated_at: an update must never store the same value again.
    image = an_image(updated_at=LATER)

    after = apply_changes(
        image,
        parse_changes([{"op": "add", "path": "/x", "value": "y"}], PatchDialect.DRAFT_10),
        MEMBER,
        RULES,
        LATER,
    )

    assert after.updated_at > image.updated_at


def test_tags_change_adds_once_and_removes_only_what_is_there() -> None:
    image = an_image()

    assert tags_change(image, added="c").value == ["a", "b", "c"]
    assert tags_change(image, added="a").value == ["a", "b"]
    assert tags_change(image, removed="a").value == ["b"]
    with pytest.raises(NotFound, match="Tag z not found"):
        tags_change(image, removed="z")
