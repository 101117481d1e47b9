"""The member calls of the images API (GET/POST /v2/images/{image_id}/members, GET/PUT/DELETE
/v2/images/{image_id}/members/{member_id}): Glance's rules (imagetasks.domain.image_members) on the
members stored beside the image (the SharedImages port; imagetasks.adapters.image_members on AWS)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from imagetasks.auth.identity import Caller
from imagetasks.domain import clock
from imagetasks.domain.errors import ConcurrentUpdate
from imagetasks.domain.image_members import (
    Member,
    check_may_add,
    check_may_remove,
    check_may_set_status,
    existing_member,
    member_shown,
    member_to_add,
    members_shown,
    status_to_set,
)
from imagetasks.domain.images import Image
from imagetasks.services.ports import SharedImages

#: Tries of a change that meets another change of the same image's members.
ATTEMPTS = 5


class ImageSharing:
    def __init__(self, images: SharedImages, now: Callable[[], datetime] = clock.now) -> None:
        self.images = images
        self.now = now

    def members(self, image_id: str, caller: Caller) -> list[Member]:
        image = self.images.get_visible(image_id, caller)
        members, _ = self.images.members.roster(image)
        return members_shown(image, caller, members)

    def member(self, image_id: str, member_id: str, caller: Caller) -> Member:
        image = self.images.get_visible(image_id, caller)
        members, _ = self.images.members.roster(image)
        return member_shown(image, caller, members, member_id)

    def add(self, image_id: str, body: Mapping[str, Any], caller: Caller) -> Member:
        member_id = member_to_add(body)

        def change(image: Image, members: dict[str, Member]) -> tuple[Member | None, str | None]:
            check_may_add(image, caller, members, member_id)
            moment = self.now()
            added = Member(image_id=image.id, member_id=member_id, created_at=moment, updated_at=moment)
            members[member_id] = added
            return added, None

        added = self._change(image_id, caller, change)
        assert added is not None
        return added

    def set_status(self, image_id: str, member_id: str, body: Mapping[str, Any], caller: Caller) -> Member:
        status = status_to_set(body)

        def change(image: Image, members: dict[str, Member]) -> tuple[Member | None, str | None]:
            check_may_set_status(image, caller, member_id)
            current = existing_member(image, members, member_id)
            updated = current.model_copy(update={"status": status, "updated_at": self.now()})
            members[member_id] = updated
            return updated, None

        updated = self._change(image_id, caller, change)
        assert updated is not None
        return updated

    def remove(self, image_id: str, member_id: str, caller: Caller) -> None:
        def change(image: Image, members: dict[str, Member]) -> tuple[Member | None, str | None]:
            check_may_remove(image, caller)
            existing_member(image, members, member_id)
            del members[member_id]
            return None, member_id

        self._change(image_id, caller, change)

    def _change(
        self,
        image_id: str,
        caller: Caller,
        change: Callable[[Image, dict[str, Member]], tuple[Member | None, str | None]],
    ) -> Member | None:
        """Read the image and its members, apply `change` (which checks the rules, edits the members
        and names the membership written or removed) and store it; read and apply again when another
        change of the members came first."""
        for _ in range(ATTEMPTS):
            image = self.images.get_visible(image_id, caller)
            members, version = self.images.members.roster(image)
            written, removed = change(image, members)
            if self.images.members.write(image, version, members, written, removed):
                return written
        raise ConcurrentUpdate(f"The members of image {image_id} kept changing during the request; try again")
