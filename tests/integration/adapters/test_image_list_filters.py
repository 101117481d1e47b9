"""Image list filters: what each returns, and what it reads (counted, not timed).

Filters with partitions of their own read about `limit` rows per partition; a second equality filter
or a range on a field other than the sort key is a DynamoDB filter expression, whose extra reads
(rows read and dropped) are measured here and reported in docs/decisions.md.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from imagetasks.adapters.images_table import ImagesTable
from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.image_listing import parse_image_list
from imagetasks.domain.images import Image, new_image
from local.provision import create_tables
from tests.support import CallCounter

IMAGES = 240
OWNERS = ("p1", "p2", "p3")
FORMATS = ("qcow2", "raw", "vmdk")
LIMIT = 10
PAGE = 25  # the correctness tests page through every result
START = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)

MEMBER = Caller(project_id="p1", user_id="u1")
OTHER = Caller(project_id="p2", user_id="u2")
ADMIN = Caller(project_id="admin", user_id="a", roles=("admin",))


def md5_of(data: int) -> str:
    return hashlib.md5(f"data-{data}".encode(), usedforsecurity=False).hexdigest()


def sha512_of(data: int) -> str:
    return hashlib.sha512(f"data-{data}".encode()).hexdigest()


def make_image(number: int, rng: random.Random) -> Image:
    visibility = rng.choice(("private", "private", "public", "community", "shared"))
    tags = tuple(sorted(rng.sample(("ubuntu", "lts", "gpu", "minimal"), rng.randint(0, 2))))
    properties = {"os_distro": rng.choice(("ubuntu", "debian", "fedora"))}
    if number % 7 == 0:
        properties["hw_disk_bus"] = "scsi#virtio"  # a value with the separator in it
    image = new_image(
        image_id=f"00000000-0000-4000-8000-{number:012d}",
        owner=OWNERS[number % len(OWNERS)],
        name=f"image-{number % 20}",
        disk_format=FORMATS[number % len(FORMATS)],
        container_format="bare",
        size=1000 + number * 10,
        virtual_size=None,
        checksum=md5_of(number % 40),  # six images share each data
        os_hash_value=sha512_of(number % 48),  # five share each
        bucket="images",
        key=f"images/{number}",
        task_id=f"task-{number}",
        properties=properties,
        moment=START + timedelta(minutes=number),
    )
    return image.model_copy(
        update={
            "visibility": visibility,
            "tags": tags,
            "os_hidden": number % 11 == 0,
            "protected": number % 2 == 0,
        }
    )


@pytest.fixture(scope="module")
def catalogue(local_template: Any) -> Any:
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(local_template, client)
        name = local_template.tables["ImagesTable"].name
        table = ImagesTable(name, client)
        rng = random.Random(11)
        images = [make_image(number, rng) for number in range(IMAGES)]
        items = [op["Put"]["Item"] for image in images for op in table._write_ops(image, {})]
        for batch in (items[i : i + 25] for i in range(0, len(items), 25)):
            client.batch_write_item(RequestItems={name: [{"PutRequest": {"Item": item}} for item in batch]})
        yield table, client, images


def visible(image: Image, caller: Caller) -> bool:
    return caller.is_admin or image.owner == caller.project_id or image.visibility in ("public", "community")


def default_listed(image: Image, caller: Caller) -> bool:
    """Glance's default list: no hidden images, no others' community images."""
    if image.os_hidden:
        return False
    if caller.is_admin or image.owner == caller.project_id:
        return True
    return image.visibility == "public"


def every_page(table: ImagesTable, caller: Caller, params: dict[str, str]) -> list[str]:
    ids: list[str] = []
    marker = None
    for _ in range(IMAGES):
        query = {**params, "limit": str(PAGE), **({"marker": marker} if marker else {})}
        rows = table.list(caller, parse_image_list(query, caller), NOW)
        ids += [row["image_id"] for row in rows]
        if len(rows) < PAGE:
            return ids
        marker = rows[-1]["image_id"]
    raise AssertionError("paging did not end")


def sort_value(image: Image, key: str) -> Any:
    return (getattr(image, key), image.created_at, image.id) if key != "id" else image.id


CASES: list[tuple[str, Caller, dict[str, str], Any]] = [
    ("member default", MEMBER, {}, lambda i, c: default_listed(i, c)),
    ("admin default", ADMIN, {}, lambda i, c: not i.os_hidden),
    ("public", MEMBER, {"visibility": "public"}, lambda i, c: i.visibility == "public" and not i.os_hidden),
    (
        "community",
        OTHER,
        {"visibility": "community"},
        lambda i, c: i.visibility == "community" and not i.os_hidden,
    ),
    (
        "private",
        MEMBER,
        {"visibility": "private"},
        lambda i, c: i.owner == "p1" and i.visibility == "private" and not i.os_hidden,
    ),
    ("all", MEMBER, {"visibility": "all"}, lambda i, c: visible(i, c) and not i.os_hidden),
    (
        "hidden",
        MEMBER,
        {"os_hidden": "true"},
        lambda i, c: i.os_hidden and (i.owner == "p1" or i.visibility == "public"),
    ),
    ("name", MEMBER, {"name": "image-7"}, lambda i, c: default_listed(i, c) and i.name == "image-7"),
    (
        "name in",
        ADMIN,
        {"name": "in:image-1,image-2"},
        lambda i, c: not i.os_hidden and i.name in ("image-1", "image-2"),
    ),
    (
        "disk_format",
        MEMBER,
        {"disk_format": "raw"},
        lambda i, c: default_listed(i, c) and i.disk_format == "raw",
    ),
    ("container_format", ADMIN, {"container_format": "bare"}, lambda i, c: not i.os_hidden),
    ("status", MEMBER, {"status": "active"}, lambda i, c: default_listed(i, c)),
    ("tag", MEMBER, {"tag": "gpu"}, lambda i, c: default_listed(i, c) and "gpu" in i.tags),
    (
        "property",
        MEMBER,
        {"os_distro": "debian"},
        lambda i, c: default_listed(i, c) and i.properties["os_distro"] == "debian",
    ),
    (
        "property with #",
        ADMIN,
        {"hw_disk_bus": "scsi#virtio"},
        lambda i, c: not i.os_hidden and i.properties.get("hw_disk_bus") == "scsi#virtio",
    ),
    ("owner (admin)", ADMIN, {"owner": "p3"}, lambda i, c: not i.os_hidden and i.owner == "p3"),
    ("owner (member, other)", MEMBER, {"owner": "p2"}, lambda i, c: default_listed(i, c) and i.owner == "p2"),
    (
        "size by size",
        MEMBER,
        {"size_min": "2000", "size_max": "4000", "sort_key": "size"},
        lambda i, c: default_listed(i, c) and 2000 <= i.size <= 4000,
    ),
    (
        "size by created_at",
        MEMBER,
        {"size_min": "2000", "size_max": "4000"},
        lambda i, c: default_listed(i, c) and 2000 <= i.size <= 4000,
    ),
    (
        "created_at gt",
        MEMBER,
        {"created_at": "gt:2026-11-01T02:00:00Z"},
        lambda i, c: default_listed(i, c) and i.created_at > START + timedelta(hours=2),
    ),
    (
        "created_at lte by name",
        MEMBER,
        {"created_at": "lte:2026-11-01T01:00:00Z", "sort_key": "name"},
        lambda i, c: default_listed(i, c) and i.created_at <= START + timedelta(hours=1),
    ),
    (
        "updated_at eq",
        ADMIN,
        {"updated_at": "eq:2026-11-01T01:00:00Z"},
        lambda i, c: not i.os_hidden and i.updated_at == START + timedelta(hours=1),
    ),
    (
        "created_at neq",
        ADMIN,
        {"created_at": "neq:2026-11-01T01:00:00Z", "sort_key": "id"},
        lambda i, c: not i.os_hidden and i.created_at != START + timedelta(hours=1),
    ),
    (
        "two filters",
        MEMBER,
        {"disk_format": "qcow2", "tag": "lts"},
        lambda i, c: default_listed(i, c) and i.disk_format == "qcow2" and "lts" in i.tags,
    ),
    (
        "checksum",
        MEMBER,
        {"checksum": md5_of(7)},
        lambda i, c: default_listed(i, c) and i.checksum == md5_of(7),
    ),
    (
        "os_hash_value",
        ADMIN,
        {"os_hash_value": sha512_of(5), "sort_key": "name"},
        lambda i, c: not i.os_hidden and i.os_hash_value == sha512_of(5),
    ),
    (
        "checksum and os_hash_value",  # the second is a filter expression on the first's partition
        ADMIN,
        {"checksum": md5_of(7), "os_hash_value": sha512_of(7)},
        lambda i, c: not i.os_hidden and i.checksum == md5_of(7) and i.os_hash_value == sha512_of(7),
    ),
    (
        "checksum and a property",
        ADMIN,
        {"checksum": md5_of(3), "os_distro": "ubuntu", "os_hidden": "false"},
        lambda i, c: not i.os_hidden and i.checksum == md5_of(3) and i.properties["os_distro"] == "ubuntu",
    ),
    (
        "protected",
        MEMBER,
        {"protected": "false", "visibility": "private"},
        lambda i, c: i.owner == "p1" and i.visibility == "private" and not i.protected and not i.os_hidden,
    ),
]


@pytest.mark.parametrize(("label", "caller", "params", "expected"), CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_each_filter_returns_what_glance_would_page_by_page(
    catalogue: Any, label: str, caller: Caller, params: dict[str, str], expected: Any, direction: str
) -> None:
    table, _, images = catalogue
    sort_key = params.get("sort_key", "created_at")

    listed = every_page(table, caller, {**params, "sort_dir": direction})

    wanted = sorted(
        (image for image in images if expected(image, caller)),
        key=lambda image: sort_value(image, sort_key),
        reverse=direction == "desc",
    )
    assert wanted, label
    assert listed == [image.id for image in wanted]


def test_id_in_reads_only_the_named_images(catalogue: Any) -> None:
    table, client, images = catalogue
    mine = [image.id for image in images if image.owner == "p1" and not image.os_hidden][:3]
    theirs_private = next(i.id for i in images if i.owner == "p2" and i.visibility == "private")
    counter = CallCounter(client)

    rows = table.list(
        MEMBER, parse_image_list({"id": "in:" + ",".join([*mine, theirs_private])}, MEMBER), NOW
    )

    assert sorted(row["image_id"] for row in rows) == sorted(mine)
    assert counter.calls == ["BatchGetItem"]


def test_a_hash_filter_reads_only_the_images_with_that_data(catalogue: Any) -> None:
    # Given 240 images, six of which have the data whose MD5 is md5_of(9)
    table, _, images = catalogue
    matching = [i for i in images if i.checksum == md5_of(9) and not i.os_hidden]

    # When an admin lists by that checksum, and by one image's os_hash_value
    by_md5 = table.list(ADMIN, parse_image_list({"checksum": md5_of(9)}, ADMIN), NOW)
    md5_read = table.last_page.stats.items_read if table.last_page else None
    by_sha = table.list(ADMIN, parse_image_list({"os_hash_value": sha512_of(9)}, ADMIN), NOW)

    # Then exactly those images are listed, and only their index rows were read
    assert sorted(row["image_id"] for row in by_md5) == sorted(i.id for i in matching)
    assert md5_read == len(matching)
    assert {row["image_id"] for row in by_sha} == {
        i.id for i in images if i.os_hash_value == sha512_of(9) and not i.os_hidden
    }
    assert by_md5 and by_sha


def test_a_hash_filter_with_id_in_compares_the_named_images_hashes(catalogue: Any) -> None:
    table, _, images = catalogue
    named = [i for i in images if not i.os_hidden][:12]
    query = {"id": "in:" + ",".join(i.id for i in named), "checksum": named[0].checksum or ""}

    rows = table.list(ADMIN, parse_image_list(query, ADMIN), NOW)

    assert {row["image_id"] for row in rows} == {i.id for i in named if i.checksum == named[0].checksum}


def test_a_repeated_tag_lists_the_images_that_have_every_tag(catalogue: Any) -> None:
    # Given images with none, one or two of the tags (some have both gpu and lts)
    table, _, images = catalogue
    both = [i for i in images if {"gpu", "lts"} <= set(i.tags) and not i.os_hidden]
    only_one = [i for i in images if len({"gpu", "lts"} & set(i.tags)) == 1 and not i.os_hidden]

    # When an admin lists tag=gpu&tag=lts (as `glance image-list --tag gpu --tag lts` sends it)
    request = parse_image_list({"tag": "lts"}, ADMIN, {"tag": ["gpu", "lts"]})
    rows = table.list(ADMIN, request, NOW)

    # Then exactly the images with both are listed, none with only one of them
    assert both and only_one
    assert sorted(row["image_id"] for row in rows) == sorted(i.id for i in both)


def test_a_checksum_no_image_has_lists_nothing(catalogue: Any) -> None:
    table, _, _ = catalogue

    rows = table.list(ADMIN, parse_image_list({"checksum": md5_of(999)}, ADMIN), NOW)

    assert rows == []


# Reads per page: (params, caller, the most rows a page of LIMIT may read).
BOUNDED = [
    ({}, ADMIN, LIMIT),
    ({}, MEMBER, 2 * LIMIT),  # own images merged with public ones
    ({"visibility": "all"}, MEMBER, 3 * LIMIT),
    ({"name": "in:image-1,image-2,image-3"}, ADMIN, 3 * LIMIT),
    ({"tag": "gpu"}, ADMIN, LIMIT),
    ({"os_distro": "fedora"}, ADMIN, LIMIT),
    ({"disk_format": "vmdk", "sort_key": "size"}, ADMIN, LIMIT),
    ({"size_min": "3000", "sort_key": "size", "sort_dir": "asc"}, ADMIN, LIMIT),
    ({"created_at": "lt:2026-11-01T03:00:00Z"}, ADMIN, LIMIT),
]


@pytest.mark.parametrize(("params", "caller", "most"), BOUNDED)
def test_partitioned_filters_read_about_limit_rows_per_partition(
    catalogue: Any, params: dict[str, str], caller: Caller, most: int
) -> None:
    table, client, _ = catalogue
    first = table.list(caller, parse_image_list({**params, "limit": str(LIMIT)}, caller), NOW)
    counter = CallCounter(client)

    page = table.list(
        caller,
        parse_image_list({**params, "limit": str(LIMIT), "marker": first[-1]["image_id"]}, caller),
        NOW,
    )

    assert len(page) == LIMIT
    assert counter.calls[0] == "GetItem" and set(counter.calls[1:]) == {"Query"}
    assert table.last_page is not None and table.last_page.stats.items_read <= most


# Filters that become a filter expression: the rows read per returned row, measured.
RESIDUAL = [
    {"disk_format": "qcow2", "tag": "lts"},  # second equality filter
    {"size_max": "1500"},  # a range on size, sorted by created_at: the oldest images, read last
    {"protected": "true"},
]


@pytest.mark.parametrize("params", RESIDUAL)
def test_residual_filters_read_more_and_the_amplification_is_measured(
    catalogue: Any, params: dict[str, str]
) -> None:
    table, _, _ = catalogue

    page = table.list(ADMIN, parse_image_list({**params, "limit": str(LIMIT)}, ADMIN), NOW)

    assert table.last_page is not None
    read = table.last_page.stats.items_read
    amplification = read / max(len(page), 1)
    print(f"{params}: {len(page)} rows returned, {read} read ({amplification:.1f}x)")
    # The bound is the partition's size, not `limit`: the residual filter's selectivity decides.
    assert len(page) == LIMIT
    assert read >= LIMIT and amplification <= IMAGES / LIMIT


def test_a_marker_the_caller_cannot_see_is_refused(catalogue: Any) -> None:
    table, _, images = catalogue
    private = next(i.id for i in images if i.owner == "p2" and i.visibility == "private")

    with pytest.raises(InvalidRequest, match="not found"):
        table.list(MEMBER, parse_image_list({"marker": private}, MEMBER), NOW)


@pytest.mark.parametrize(
    "params",
    [
        {"visibility": "everyone"},
        {"os_hidden": "maybe"},
        {"size_min": "-1"},
        {"size_min": "10", "size_max": "5"},
        {"created_at": "after:2026-11-01T00:00:00Z"},
        {"created_at": "gt:yesterday"},
        {"sort_key": "owner"},
        {"checksum": "in:a,b"},
    ],
)
def test_bad_filters_are_400s(params: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        parse_image_list(params, MEMBER)
