"""Sharing an image with other projects (imagetasks.services.image_sharing) on an in-memory roster."""

from __future__ import annotations

import pytest

from imagetasks.auth.identity import Caller
from imagetasks.domain import clock
from imagetasks.domain.errors import ConcurrentUpdate, NotFound, NotPermitted
from imagetasks.domain.image_create import queued_image
from imagetasks.domain.image_members import DuplicateMember, MemberStatus
from imagetasks.domain.images import Image
from imagetasks.domain.task_input import ImportRules
from imagetasks.services.image_sharing import ATTEMPTS, ImageSharing
from tests.fakes import InMemorySharedImages

RULES = ImportRules(allowed_disk_formats=("qcow2",), allowed_container_formats=("bare",))
OWNER = Caller(project_id="p1", user_id="u1", roles=("member",))
GUEST = Caller(project_id="p2", user_id="u2", roles=("member",))
STRANGER = Caller(project_id="p3", user_id="u3", roles=("member",))


def shared_image() -> Image:
    body = {"name": "cirros", "disk_format": "qcow2", "container_format": "bare", "visibility": "shared"}
    return queued_image(body, "p1", False, RULES, clock.now())


def build() -> tuple[ImageSharing, InMemorySharedImages, Image]:
    image = shared_image()
    images = InMemorySharedImages(image)
    return ImageSharing(images), images, image


def test_the_owner_adds_a_pending_member_who_then_sees_the_image_and_only_itself() -> None:
    sharing, _, image = build()

    added = sharing.add(image.id, {"member": "p2"}, OWNER)

    assert (added.member_id, added.status) == ("p2", MemberStatus.PENDING)
    assert [member.member_id for member in sharing.members(image.id, OWNER)] == ["p2"]
    assert [member.member_id for member in sharing.members(image.id, GUEST)] == ["p2"]
    with pytest.raises(NotFound):
        sharing.members(image.id, STRANGER)


def test_only_the_member_accepts_and_only_the_owner_removes() -> None:
    sharing, images, image = build()
    sharing.add(image.id, {"member": "p2"}, OWNER)

    with pytest.raises(NotPermitted):
        sharing.set_status(image.id, "p2", {"status": "accepted"}, OWNER)
    accepted = sharing.set_status(image.id, "p2", {"status": "accepted"}, GUEST)
    with pytest.raises(NotPermitted):
        sharing.remove(image.id, "p2", GUEST)
    sharing.remove(image.id, "p2", OWNER)

    assert accepted.status is MemberStatus.ACCEPTED
    assert images.roster(image) == ({}, 3)


def test_a_member_added_twice_is_refused_and_the_roster_keeps_one() -> None:
    sharing, images, image = build()
    sharing.add(image.id, {"member": "p2"}, OWNER)

    with pytest.raises(DuplicateMember):
        sharing.add(image.id, {"member": "p2"}, OWNER)

    assert list(images.roster(image)[0]) == ["p2"]


def test_a_change_that_meets_another_is_read_and_applied_again() -> None:
    sharing, images, image = build()
    images.interfere(ATTEMPTS - 1)

    sharing.add(image.id, {"member": "p2"}, OWNER)

    assert images.writes == ATTEMPTS
    assert list(images.roster(image)[0]) == ["p2"]


def test_a_roster_that_keeps_changing_ends_in_a_conflict_and_writes_nothing() -> None:
    sharing, images, image = build()
    images.interfere(ATTEMPTS)

    with pytest.raises(ConcurrentUpdate, match="kept changing"):
        sharing.add(image.id, {"member": "p2"}, OWNER)

    assert images.roster(image)[0] == {}
