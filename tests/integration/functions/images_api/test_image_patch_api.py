"""PATCH /v2/images/{image_id} and the tag routes on moto: Glance's JSON patch stored with a
conditional write, list index rows moved with the image, refusals with Glance's statuses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagetasks import composition
from imagetasks.adapters import images_table
from imagetasks.adapters.images_table import ImagesTable
from imagetasks.config import Settings
from imagetasks.domain.images import Image
from tests.image_corpus import make_qcow2, require_qemu_img
from tests.integration.functions.images_api.test_image_import_api import (
    _the_import_task,
    start_import,
    upload,
)
from tests.support import CREATE_IMAGE, PATCH_V21, api_event, call, create_image, header, listed, patch, show


def index_rows(aws: dict[str, str], image_id: str) -> set[str]:
    items = boto3.resource("dynamodb").Table(aws["IMAGES_TABLE"]).scan()["Items"]
    return {str(item["id"]) for item in items if str(item["id"]).startswith(f"{image_id}#")}


def test_a_patch_changes_the_image_and_what_lists_find_it_by(images: Any, aws: dict[str, str]) -> None:
    # Given a queued image named cirros, tagged a and b, with os_distro=cirros
    created = create_image(images)
    rows_before = index_rows(aws, created["id"])
    # When a patch renames it, adds a property, replaces one, and replaces its tags
    response = patch(
        images,
        created["id"],
        [
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
            {"op": "replace", "path": "/os_distro", "value": "ubuntu"},
            {"op": "replace", "path": "/tags", "value": ["c"]},
            {"op": "replace", "path": "/min_ram", "value": 128},
        ],
    )
    # Then the answer is the changed image, as GET shows it
    assert response["statusCode"] == 200, response["body"]
    image = response["json"]
    assert (image["name"], image["tags"], image["min_ram"]) == ("renamed", ["c"], 128)
    assert (image["hw_disk_bus"], image["os_distro"]) == ("virtio", "ubuntu")
    assert image["created_at"] == created["created_at"] and image["id"] == created["id"]
    assert show(images, created["id"]) == image
    # And the lists find it by what it is now, not by what it was
    assert listed(images, name="renamed") == [created["id"]]
    assert listed(images, name="cirros") == []
    assert listed(images, tag="c") == [created["id"]] and listed(images, tag="a") == []
    assert listed(images, os_distro="ubuntu") == [created["id"]] and listed(images, os_distro="cirros") == []
    # And no index row of the old values is left behind
    rows_after = index_rows(aws, created["id"])
    assert rows_after != rows_before and not any("cirros" in row for row in rows_after)


def test_an_empty_patch_answers_the_image_unchanged(images: Any) -> None:
    created = create_image(images)

    response = patch(images, created["id"], [])

    assert response["statusCode"] == 200 and response["json"] == created


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        ([{"op": "replace", "path": "/name", "value": "x"}], "application/json", 415, "JSON patch"),
        ({"op": "replace"}, PATCH_V21, 400, "Request body must be a JSON array of operation objects."),
        ([{"op": "replace", "path": "/status", "value": "active"}], PATCH_V21, 403, "is read-only."),
        ([{"op": "add", "path": "/os_glance_x", "value": "1"}], PATCH_V21, 403, "is reserved."),
        ([{"op": "remove", "path": "/name"}], PATCH_V21, 403, "Property name may not be removed."),
        ([{"op": "replace", "path": "/nope", "value": "1"}], PATCH_V21, 409, "Property nope does not exist."),
        ([{"op": "replace", "path": "/min_ram", "value": "64"}], PATCH_V21, 400, "Invalid value for min_ram"),
        (
            [{"op": "replace", "path": "/visibility", "value": "public"}],
            PATCH_V21,
            403,
            "You are not authorized to complete publicize_image action.",
        ),
    ],
)
def test_refused_patches_change_nothing(
    images: Any, body: Any, content_type: str, status: int, message: str
) -> None:
    created = create_image(images)

    response = patch(images, created["id"], body, content_type=content_type)

    assert response["statusCode"] == status, response["body"]
    assert message in response["json"]["error"]["message"]
    assert show(images, created["id"]) == created
    if status == 415:
        assert PATCH_V21 in str(header(response, "Accept-Patch"))


def test_other_projects_images_are_404_when_private_and_403_when_public(images: Any) -> None:
    private = create_image(images, project="project-b")
    public = create_image(images, {**CREATE_IMAGE, "visibility": "community"}, project="project-b")
    body = [{"op": "replace", "path": "/name", "value": "mine now"}]

    hidden = patch(images, private["id"], body)
    refused = patch(images, public["id"], body)
    by_admin = patch(images, private["id"], body, project="admin-project", roles="admin")

    assert hidden["statusCode"] == 404 and refused["statusCode"] == 403
    assert refused["json"]["error"]["message"] == "You are not authorized to complete modify_image action."
    assert by_admin["statusCode"] == 200 and by_admin["json"]["name"] == "mine now"


def test_tags_are_added_and_removed_one_by_one(images: Any) -> None:
    created = create_image(images)
    image_id = created["id"]

    added = call(images, api_event("PUT", f"/v2/images/{image_id}/tags/new tag"))
    again = call(images, api_event("PUT", f"/v2/images/{image_id}/tags/new tag"))
    removed = call(images, api_event("DELETE", f"/v2/images/{image_id}/tags/a"))
    missing = call(images, api_event("DELETE", f"/v2/images/{image_id}/tags/a"))

    assert (added["statusCode"], again["statusCode"], removed["statusCode"]) == (204, 204, 204)
    assert missing["statusCode"] == 404 and "Tag a not found" in missing["json"]["error"]["message"]
    assert show(images, image_id)["tags"] == ["b", "new tag"]
    assert listed(images, tag="new tag") == [image_id]


def test_a_concurrent_update_is_not_lost(
    images: Any, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an update whose read is followed by another patch being stored before its own write
    # (the whole other request runs inside the first try: however long a loaded machine takes for
    # it, the retry is what is checked here; the time budget is tests/unit/adapters/test_images_table)
    monkeypatch.setattr(images_table, "UPDATE_SECONDS", 600.0)
    created = create_image(images)
    seen: list[Image] = []

    def rename(current: Image) -> Image:
        seen.append(current)
        if len(seen) == 1:
            other = patch(images, created["id"], [{"op": "add", "path": "/other", "value": "kept"}])
            assert other["statusCode"] == 200
        return current.model_copy(
            update={"name": "mine", "updated_at": current.updated_at + timedelta(microseconds=1)}
        )

    # When it is stored
    ImagesTable(aws["IMAGES_TABLE"]).update(created["id"], rename)
    # Then its conditional write failed once and it was made again from the other's result
    assert len(seen) == 2 and seen[1].properties["other"] == "kept"
    shown = show(images, created["id"])
    assert shown["name"] == "mine" and shown["other"] == "kept"


def test_a_patch_during_an_import_is_kept_when_the_import_ends(
    images: Any, aws: dict[str, str], tmp_path: Path
) -> None:
    # Given a queued image whose web-download import is running
    require_qemu_img()
    created = create_image(images)
    assert (
        start_import(images, created["id"], upload(aws, make_qcow2(tmp_path).read_bytes()))["statusCode"]
        == 202
    )
    task_id = _the_import_task(images, aws, created["id"])
    steps = composition.import_task(Settings.from_environ())
    staged = steps.fetch(task_id)
    # When the image is renamed before the register step writes the imported data
    renamed = patch(images, created["id"], [{"op": "replace", "path": "/name", "value": "renamed"}])
    result = steps.register(task_id, staged)
    # Then the import still fills that image, and the new name stays
    assert renamed["statusCode"] == 200 and renamed["json"]["status"] == "importing"
    assert result == {"image_id": created["id"]}
    image = show(images, created["id"])
    assert image["status"] == "active" and image["name"] == "renamed"
