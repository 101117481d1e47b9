"""Image list requests as Glance reads them: the hash filters and the sort parameters."""

from __future__ import annotations

import pytest

from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.image_listing import parse_image_list
from imagetasks.domain.listing import SortDir

MEMBER = Caller(project_id="p1", user_id="u1")
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA512 = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce" * 2


def test_checksum_and_os_hash_value_are_filters_not_extra_properties() -> None:
    # When a list asks for one checksum and one os_hash_value
    request = parse_image_list({"checksum": MD5, "os_hash_value": SHA512}, MEMBER)

    # Then the checksum picks the partitions (the caller's and the public images with that data)
    assert request.partitions == (f"p#p1#checksum#{MD5}", f"v#public#checksum#{MD5}")
    # and os_hash_value is compared on each row, as an image field (not as a property named so)
    assert [(c.field, c.op, c.values) for c in request.conditions] == [("os_hash_value", "eq", (SHA512,))]


def test_os_hash_value_alone_picks_the_partitions() -> None:
    request = parse_image_list({"os_hash_value": SHA512, "name": "cirros"}, MEMBER)

    assert request.partitions == (f"p#p1#os_hash_value#{SHA512}", f"v#public#os_hash_value#{SHA512}")
    assert [(c.field, c.values) for c in request.conditions] == [("name", ("cirros",))]


def test_a_hash_filter_takes_no_in_operator() -> None:
    with pytest.raises(InvalidRequest, match="The 'in' operator is not supported for checksum"):
        parse_image_list({"checksum": f"in:{MD5},{MD5}"}, MEMBER)


def sort_of(params: dict[str, str], repeated: dict[str, list[str]] | None = None) -> tuple[str, SortDir]:
    request = parse_image_list(params, MEMBER, repeated)
    return request.sort_key, request.sort_dir


@pytest.mark.parametrize(
    ("params", "repeated", "expected"),
    [
        ({}, None, ("created_at", SortDir.DESC)),
        ({"sort_key": "name", "sort_dir": "asc"}, None, ("name", SortDir.ASC)),
        ({"sort": "size:asc"}, None, ("size", SortDir.ASC)),
        ({"sort": "name"}, None, ("name", SortDir.DESC)),
        # Glance's own tie-breakers named: the same order as the first key alone
        ({"sort": "name,created_at"}, None, ("name", SortDir.DESC)),
        ({"sort": "updated_at:asc"}, None, ("updated_at", SortDir.ASC)),
        (
            {"sort_key": "id", "sort_dir": "asc"},
            {"sort_key": ["name", "created_at", "id"], "sort_dir": ["asc"]},
            ("name", SortDir.ASC),
        ),
        ({"sort_key": "size"}, {"sort_key": ["id", "size"]}, ("id", SortDir.DESC)),  # ids never tie
    ],
)
def test_one_sort_key_or_glances_tie_breakers_after_it(
    params: dict[str, str], repeated: dict[str, list[str]] | None, expected: tuple[str, SortDir]
) -> None:
    assert sort_of(params, repeated) == expected


@pytest.mark.parametrize(
    ("params", "repeated"),
    [
        ({"sort": "name:asc,size:desc"}, None),
        ({"sort": "size,name"}, None),
        ({"sort_key": "size"}, {"sort_key": ["name", "size"]}),  # what API Gateway passes
        ({"sort_key": "size", "sort_dir": "asc"}, {"sort_key": ["name", "size"], "sort_dir": ["asc"]}),
        # several directions: Glance then breaks ties by id descending, not as the index does
        ({"sort": "name:asc,created_at:asc"}, None),
        ({"sort_key": "created_at"}, {"sort_key": ["created_at", "id"], "sort_dir": ["desc", "asc"]}),
    ],
)
def test_several_sort_keys_are_a_400_naming_what_is_supported(
    params: dict[str, str], repeated: dict[str, list[str]] | None
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_image_list(params, MEMBER, repeated)

    message = refused.value.message
    assert message.startswith("Sorting by several keys is not supported by this service (asked: ")
    assert "Sort by one key, one of created_at, updated_at, name, size, id" in message


@pytest.mark.parametrize(
    ("params", "repeated", "message"),
    [
        ({"sort": "name", "sort_key": "size"}, None, "Old and new sorting syntax cannot be combined"),
        ({"sort": "name:up"}, None, "Invalid sort direction: up"),
        ({"sort": "owner"}, None, "Sort key supplied was not valid."),
        ({"sort": "name,"}, None, "Sort key supplied was not valid."),
        (
            {"sort_key": "size", "sort_dir": "asc"},
            {"sort_key": ["name", "size", "id"], "sort_dir": ["asc", "desc"]},
            "Number of sort dirs does not match the number of sort keys",
        ),
        ({"sort_key": "size"}, {"sort_key": ["name", "bogus"]}, "Sort key supplied was not valid."),
    ],
)
def test_bad_sort_parameters_have_glances_messages(
    params: dict[str, str], repeated: dict[str, list[str]] | None, message: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_image_list(params, MEMBER, repeated)

    assert refused.value.message == message
