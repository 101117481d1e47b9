"""The images API's answers Glance clients read without checking: hash filters, several sort keys,
and an upload refused by this service."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from imagetasks.adapters.images_table import ImagesTable
from imagetasks.domain.images import Image, new_image
from tests.support import api_event, call

PROJECT = "project-a"
START = datetime(2026, 12, 1, tzinfo=UTC)


def active_image(aws: dict[str, str], number: int, name: str, size: int, data: bytes) -> Image:
    image = new_image(
        image_id=f"00000000-0000-4000-8000-{number:012d}",
        owner=PROJECT,
        name=name,
        disk_format="raw",
        container_format="bare",
        size=size,
        virtual_size=size,
        checksum=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        os_hash_value=hashlib.sha512(data).hexdigest(),
        bucket="images",
        key=f"images/{number}",
        task_id=f"task-{number}",
        moment=START + timedelta(minutes=number),
    )
    assert ImagesTable(aws["IMAGES_TABLE"]).create(image)
    return image


def list_images(images: Any, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """GET /v2/images with the query as a client sends it (a name may repeat), as API Gateway passes
    it: the last value of each name, and every value."""
    event = api_event("GET", "/v2/images", query=dict(pairs) or None)
    repeated: dict[str, list[str]] = {}
    for name, value in pairs:
        repeated.setdefault(name, []).append(value)
    event["multiValueQueryStringParameters"] = repeated or None
    return call(images, event)


# ------------------------------------------------------------------ checksum, os_hash_value
def test_checksum_and_os_hash_value_find_the_image_with_that_data(images: Any, aws: dict[str, str]) -> None:
    # Given two images with different data, and a third with the first one's data
    first = active_image(aws, 1, "one", 3, b"abc")
    active_image(aws, 2, "two", 3, b"xyz")
    twin = active_image(aws, 3, "three", 3, b"abc")

    # When the list is asked for the first image's checksum, its os_hash_value, or both
    by_md5 = list_images(images, [("checksum", first.checksum or "")])
    by_sha = list_images(images, [("os_hash_value", first.os_hash_value or "")])
    by_both = list_images(
        images, [("checksum", first.checksum or ""), ("os_hash_value", twin.os_hash_value or "")]
    )

    # Then exactly the images with that data are listed, newest first
    for response in (by_md5, by_sha, by_both):
        assert response["statusCode"] == 200, response["body"]
        assert [image["id"] for image in response["json"]["images"]] == [twin.id, first.id]
    assert by_md5["json"]["images"][0]["checksum"] == hashlib.md5(b"abc", usedforsecurity=False).hexdigest()


def test_a_hash_no_image_has_lists_nothing(images: Any, aws: dict[str, str]) -> None:
    active_image(aws, 1, "one", 3, b"abc")

    response = list_images(images, [("checksum", hashlib.md5(b"other", usedforsecurity=False).hexdigest())])

    assert response["statusCode"] == 200 and response["json"]["images"] == []


# ------------------------------------------------------------------ sort keys
def test_several_sort_keys_are_a_400_that_says_what_is_supported(images: Any, aws: dict[str, str]) -> None:
    active_image(aws, 1, "b", 10, b"1")

    for pairs in (
        [("sort_key", "name"), ("sort_key", "size")],
        [("sort", "name:asc,size:desc")],
    ):
        response = list_images(images, pairs)

        assert response["statusCode"] == 400, pairs
        message = response["json"]["error"]["message"]
        assert message.startswith("Sorting by several keys is not supported by this service")
        assert "Sort by one key, one of created_at, updated_at, name, size, id" in message


def test_glances_own_tie_breakers_after_a_key_sort_as_that_key_and_links_keep_them(
    images: Any, aws: dict[str, str]
) -> None:
    # Given three images, two with the same name
    older_a = active_image(aws, 1, "a", 30, b"1")
    b = active_image(aws, 2, "b", 10, b"2")
    newer_a = active_image(aws, 3, "a", 20, b"3")
    pairs = [("sort_key", "name"), ("sort_key", "created_at"), ("sort_dir", "asc"), ("limit", "2")]

    # When a client sorts by name then created_at, ascending, two a page
    page = list_images(images, pairs)

    # Then ties on the name are broken by created_at, and `next` repeats both keys
    assert page["statusCode"] == 200, page["body"]
    assert [image["id"] for image in page["json"]["images"]] == [older_a.id, newer_a.id]
    following = parse_qsl(urlsplit(page["json"]["next"]).query)
    assert [value for name, value in following if name == "sort_key"] == ["name", "created_at"]
    assert list_images(images, following)["json"]["images"][0]["id"] == b.id


# ------------------------------------------------------------------ refused uploads
def create_queued(images: Any, **extra: Any) -> str:
    body = {"name": "from-file", "disk_format": "raw", "container_format": "bare", **extra}
    response = call(images, api_event("POST", "/v2/images", body=body))
    assert response["statusCode"] == 201, response["body"]
    image_id: str = response["json"]["id"]
    return image_id


def upload(
    images: Any, image_id: str, route: str = "file", project: str = PROJECT, roles: str = "member"
) -> Any:
    event = api_event(
        "PUT",
        f"/v2/images/{image_id}/{route}",
        raw_body="image data",
        project=project,
        roles=roles,
        headers={"Content-Type": "application/octet-stream"},
    )
    return call(images, event)


def stored_ids(aws: dict[str, str]) -> set[str]:
    """Every item of the images table: main items and index rows."""
    import boto3

    items = boto3.resource("dynamodb").Table(aws["IMAGES_TABLE"]).scan()["Items"]
    return {str(item["id"]) for item in items}


@pytest.mark.parametrize("route", ["file", "stage"])
def test_a_refused_upload_deletes_the_queued_image_made_for_it_and_says_how_to_upload(
    images: Any, aws: dict[str, str], route: str
) -> None:
    # Given the queued image `glance image-create --file` makes before it sends the data
    image_id = create_queued(images)

    # When the data arrives
    response = upload(images, image_id, route)

    # Then it is refused with a message saying the image is gone and how to upload instead
    assert response["statusCode"] == 405
    message = response["json"]["error"]["message"]
    assert message.startswith("Image data cannot be uploaded through this API")
    assert f"The queued image {image_id} made for this upload was deleted." in message
    assert f"s3://{aws['UPLOADS_BUCKET']}/uploads/<project_id>/<file name>" in message
    assert "web-download" in message
    # and nothing of the image is left: no image, no index row, nothing listed
    assert call(images, api_event("GET", f"/v2/images/{image_id}"))["statusCode"] == 404
    assert not any(item.startswith(image_id) for item in stored_ids(aws))
    assert call(images, api_event("GET", "/v2/images"))["json"]["images"] == []


def test_a_refused_upload_keeps_an_image_it_did_not_make_empty(images: Any, aws: dict[str, str]) -> None:
    # Given an active image, a protected queued one, another project's queued one and one an
    # import is filling
    active = active_image(aws, 1, "active", 3, b"abc")
    protected = create_queued(images, protected=True)
    theirs = call(
        images,
        api_event(
            "POST",
            "/v2/images",
            body={"name": "x", "disk_format": "raw", "container_format": "bare"},
            project="project-b",
        ),
    )["json"]["id"]
    importing = create_queued(images)
    started = call(
        images,
        api_event(
            "POST",
            f"/v2/images/{importing}/import",
            body={"method": {"name": "web-download", "uri": "https://93.184.216.34/disk.raw"}},
        ),
    )
    assert started["statusCode"] == 202, started["body"]

    # When data is sent to each (the other project's by an admin of this one)
    answers = [
        upload(images, active.id),
        upload(images, protected),
        upload(images, theirs, roles="member,admin"),
        upload(images, importing),
    ]

    # Then each is refused without deleting anything
    for response in answers:
        assert response["statusCode"] == 405
        assert "was deleted" not in response["json"]["error"]["message"]
    for image_id, project in (
        (active.id, PROJECT),
        (protected, PROJECT),
        (theirs, "project-b"),
        (importing, PROJECT),
    ):
        assert call(images, api_event("GET", f"/v2/images/{image_id}", project=project))["statusCode"] == 200


def test_a_queued_image_changed_meanwhile_is_not_deleted(images: Any, aws: dict[str, str]) -> None:
    # Given a queued image as read before a change (a rename) was stored
    image_id = create_queued(images)
    table = ImagesTable(aws["IMAGES_TABLE"])
    before = table.get(image_id)
    assert before is not None
    patched = call(
        images,
        api_event(
            "PATCH",
            f"/v2/images/{image_id}",
            body=[{"op": "replace", "path": "/name", "value": "renamed"}],
            headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
        ),
    )
    assert patched["statusCode"] == 200

    # When the delete for a refused upload runs on what it read
    deleted = table.delete_if_unchanged(before)

    # Then nothing is deleted
    assert deleted is False
    assert table.get(image_id) is not None and f"{image_id}#p#{PROJECT}" in stored_ids(aws)
