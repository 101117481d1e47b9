"""`first` and `next` links: the request's own parameters again, as Glance writes them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from imagetasks.api.glance import page_links

MARKER = "3f0c3c7e-9a47-4d55-8f55-5d2f0a2b6d11"


def test_a_bare_request_links_to_the_bare_path() -> None:
    assert page_links("/v2/tasks", {}, None) == {"first": "/v2/tasks"}


def test_next_is_the_request_again_with_the_new_marker_last() -> None:
    links = page_links("/v2/tasks", {"limit": "2", "status": "success"}, MARKER)

    assert links["first"] == "/v2/tasks?limit=2&status=success"
    assert parse_qsl(urlsplit(links["next"]).query) == [
        ("limit", "2"),
        ("status", "success"),
        ("marker", MARKER),
    ]


def test_the_requests_own_marker_is_dropped_and_no_default_is_added() -> None:
    links = page_links("/v2/images", {"marker": "old", "sort_dir": "asc"}, MARKER)

    assert links == {"first": "/v2/images?sort_dir=asc", "next": f"/v2/images?sort_dir=asc&marker={MARKER}"}


def test_a_bare_request_with_a_next_page_carries_only_the_marker() -> None:
    assert page_links("/v2/images", {}, MARKER)["next"] == f"/v2/images?marker={MARKER}"
