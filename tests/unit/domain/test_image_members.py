"""Glance's member rules as plain functions: who may add, see, accept and remove members, the
request bodies, and which member statuses a list of images adds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import InvalidRequest, LimitExceeded, NotFound, NotPermitted
from imagetasks.domain.image_listing import parse_image_list
from imagetasks.domain.image_members import (
    MAX_MEMBERS,
    DuplicateMember,
    Member,
    MemberStatus,
    check_may_add,
    check_may_remove,
    check_may_set_status,
    member_shown,
    member_to_add,
    members_shown,
    status_to_set,
)
from imagetasks.domain.images import Image

MOMENT = datetime(2026, 12, 7, tzinfo=UTC)
OWNER = Caller(project_id="owner", user_id="u")
MEMBER = Caller(project_id="member", user_id="u")
OTHER = Caller(project_id="other", user_id="u")
ADMIN = Caller(project_id="admin-project", user_id="u", roles=("admin",))


def image(visibility: str = "shared") -> Image:
    return Image(
        id="0b5c1e7e-9c1a-4d8e-8f0e-2a6f1d3c4b5a",
        disk_format="qcow2",
        container_format="bare",
        owner="owner",
        visibility=visibility,
        created_at=MOMENT,
        updated_at=MOMENT,
    )


def members(*projects: str) -> dict[str, Member]:
    shared = image()
    return {
        project: Member(image_id=shared.id, member_id=project, created_at=MOMENT, updated_at=MOMENT)
        for project in projects
    }


def test_only_the_owner_or_an_admin_adds_to_a_shared_image() -> None:
    check_may_add(image(), OWNER, {}, "member")
    check_may_add(image(), ADMIN, {}, "member")
    with pytest.raises(NotPermitted, match="Not allowed to create members"):
        check_may_add(image(), MEMBER, {}, "other")
    with pytest.raises(NotPermitted, match="Not allowed to create members"):
        check_may_add(image("private"), OWNER, {}, "member")


def test_a_duplicate_and_one_member_too_many_are_refused() -> None:
    with pytest.raises(DuplicateMember, match="Member member is duplicated"):
        check_may_add(image(), OWNER, members("member"), "member")
    full = members(*(f"p{number}" for number in range(MAX_MEMBERS)))
    with pytest.raises(LimitExceeded, match=f"Attempted: {MAX_MEMBERS + 1}, Maximum: {MAX_MEMBERS}"):
        check_may_add(image(), OWNER, full, "one-more")


def test_only_the_member_or_an_admin_sets_the_status_and_only_the_owner_removes() -> None:
    check_may_set_status(image(), MEMBER, "member")
    check_may_set_status(image(), ADMIN, "member")
    for caller in (OWNER, OTHER):
        with pytest.raises(NotPermitted, match="Not allowed to update members"):
            check_may_set_status(image(), caller, "member")
    check_may_remove(image(), OWNER)
    with pytest.raises(NotPermitted, match="Not allowed to delete members"):
        check_may_remove(image(), MEMBER)


def test_the_owner_sees_every_member_a_member_itself_and_others_are_hidden_as_404() -> None:
    both = members("member", "other")

    assert [m.member_id for m in members_shown(image(), OWNER, both)] == ["member", "other"]
    assert [m.member_id for m in members_shown(image(), MEMBER, both)] == ["member"]
    assert member_shown(image(), MEMBER, both, "member").member_id == "member"
    with pytest.raises(NotFound, match="other not found in the member list"):
        member_shown(image(), MEMBER, both, "other")
    with pytest.raises(NotPermitted, match="Only shared images have members"):
        members_shown(image("public"), OWNER, both)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Member to be added not specified"),
        ({"member": "  "}, "Member can't be empty"),
        ({"member": None}, "Expected a member in the form"),
        ({"member": "a\x00b"}, "member"),
    ],
)
def test_bad_member_bodies_say_what_to_fix(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        member_to_add(body)


def test_a_status_is_one_of_glances_three_and_other_fields_are_ignored_as_glance_does() -> None:
    assert status_to_set({"status": "accepted"}) is MemberStatus.ACCEPTED
    assert status_to_set({"status": "rejected", "member": "m", "image_id": "i"}) is MemberStatus.REJECTED
    assert member_to_add({"member": "m", "status": "accepted"}) == "m"
    with pytest.raises(InvalidRequest, match="Status not specified"):
        status_to_set({})
    with pytest.raises(InvalidRequest, match='Status must be "pending", "accepted" or "rejected"'):
        status_to_set({"status": "ACCEPTED"})


@pytest.mark.parametrize(
    ("params", "caller", "statuses"),
    [
        ({}, MEMBER, ("accepted",)),
        ({"member_status": "pending"}, MEMBER, ("pending",)),
        ({"member_status": "all"}, MEMBER, ("accepted", "pending", "rejected")),
        ({"visibility": "shared"}, MEMBER, ("accepted",)),
        ({"visibility": "all"}, MEMBER, ("accepted",)),
        ({"visibility": "private"}, MEMBER, ()),
        ({"visibility": "public"}, MEMBER, ()),
        ({"owner": "member"}, MEMBER, ()),
        ({"owner": "owner"}, MEMBER, ("accepted",)),
        ({}, ADMIN, ()),  # admins list every image already
    ],
)
def test_which_shared_images_a_list_adds(
    params: dict[str, str], caller: Caller, statuses: tuple[str, ...]
) -> None:
    request = parse_image_list(params, caller)

    assert request.member_statuses == statuses
    assert bool(request.shared_partitions) == bool(statuses)
