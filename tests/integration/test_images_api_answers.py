"""The images API's answers Glance clients read without checking: hash filters and several sort
keys."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from imagetasks.adapters.images_table import ImagesTable
from imagetasks.domain.images import Image, new_image
from tests.support import api_event, call, images_api_handler

PROJECT = "project-a"
START = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def images(aws: dict[str, str]) -> Any:
    return images_api_handler()


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
