"""Image sharing as Glance does it: an image with visibility `shared` has *members* (projects), each
`pending`, `accepted` or `rejected`. The owner adds and removes members; each member sets its own
status; an accepted member lists the image and may convert or export it, and any member may show it.

The rules and their wording are Glance's (glance/api/v2/image_members.py, its default policy)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from imagetasks.auth.identity import Caller
from imagetasks.domain import clock
from imagetasks.domain.errors import DomainError, InvalidRequest, LimitExceeded, NotFound, NotPermitted
from imagetasks.domain.images import Image
from imagetasks.domain.user_text import check_text

#: Glance's `image_member_quota` default: members one image may have.
MAX_MEMBERS = 128
#: A member is a project id: Keystone's are at most 64 characters; a token's project id here at most 255.
MAX_MEMBER_ID_LENGTH = 255
SHARED = "shared"


class MemberStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Member(BaseModel):
    """One project's membership of one image."""

    model_config = ConfigDict(frozen=True)

    image_id: str
    member_id: str
    status: MemberStatus = MemberStatus.PENDING
    created_at: datetime
    updated_at: datetime


def member_view(member: Member) -> dict[str, Any]:
    """A member as Glance shows it."""
    return {
        "created_at": clock.to_api(member.created_at),
        "image_id": member.image_id,
        "member_id": member.member_id,
        "schema": "/v2/schemas/member",
        "status": member.status.value,
        "updated_at": clock.to_api(member.updated_at),
    }


def member_to_add(body: Mapping[str, Any]) -> str:
    """The project a POST /v2/images/{image_id}/members body names (Glance's wording for what is
    wrong). Other fields are ignored, as Glance ignores them (openstacksdk sends the member's view)."""
    if "member" not in body:
        raise InvalidRequest("Member to be added not specified")
    member_id = body["member"]
    if not isinstance(member_id, str):
        raise InvalidRequest('Expected a member in the form: {"member": "<project id>"}')
    if not member_id.strip():
        raise InvalidRequest("Member can't be empty")
    if len(member_id) > MAX_MEMBER_ID_LENGTH:
        raise InvalidRequest(f"Member is {len(member_id)} characters long; at most {MAX_MEMBER_ID_LENGTH}")
    check_text("member", member_id)
    return member_id


def status_to_set(body: Mapping[str, Any]) -> MemberStatus:
    """The status a PUT /v2/images/{image_id}/members/{member_id} body asks for; other fields are
    ignored, as Glance ignores them (openstacksdk sends `member` and `image_id` too)."""
    if "status" not in body:
        raise InvalidRequest("Status not specified")
    status = body["status"]
    if not isinstance(status, str) or status not in {s.value for s in MemberStatus}:
        raise InvalidRequest('Incorrect request: Status must be "pending", "accepted" or "rejected".')
    return MemberStatus(status)


def is_owner(image: Image, caller: Caller) -> bool:
    """Who manages the members: the image's project, and admins (Glance's default policy)."""
    return caller.can_see(image.owner)


def check_shared(image: Image, refusal: str) -> None:
    """Glance's first check of every member call: only a shared image has members (403)."""
    if image.visibility != SHARED:
        raise NotPermitted(refusal)


def check_may_add(image: Image, caller: Caller, members: Mapping[str, Member], member_id: str) -> None:
    refusal = f"Not allowed to create members for image {image.id}."
    check_shared(image, refusal)
    if not is_owner(image, caller):
        raise NotPermitted(refusal)
    if member_id in members:
        raise DuplicateMember(f"Member {member_id} is duplicated for image {image.id}")
    if len(members) >= MAX_MEMBERS:
        raise LimitExceeded(
            f"Image member limit exceeded for image {image.id}: The limit has been exceeded on the number "
            f"of allowed image members for this image. Attempted: {len(members) + 1}, Maximum: {MAX_MEMBERS}"
        )


def check_may_set_status(image: Image, caller: Caller, member_id: str) -> None:
    """Only the member itself accepts or rejects (an admin may too); the owner may not."""
    refusal = f"Not allowed to update members for image {image.id}."
    check_shared(image, refusal)
    if caller.is_admin:
        return
    if caller.project_id != member_id:
        raise NotPermitted(refusal)


def check_may_remove(image: Image, caller: Caller) -> None:
    refusal = f"Not allowed to delete members for image {image.id}."
    check_shared(image, refusal)
    if not is_owner(image, caller):
        raise NotPermitted(refusal)


def members_shown(image: Image, caller: Caller, members: Mapping[str, Member]) -> list[Member]:
    """GET /v2/images/{image_id}/members: the owner sees every member, a member only itself."""
    check_shared(image, f"Not allowed to list members for image {image.id}: Only shared images have members.")
    if is_owner(image, caller):
        return sorted(members.values(), key=lambda member: (member.created_at, member.member_id))
    own = members.get(caller.project_id)
    return [own] if own is not None else []


def member_shown(image: Image, caller: Caller, members: Mapping[str, Member], member_id: str) -> Member:
    """GET /v2/images/{image_id}/members/{member_id}: Glance answers 404 for what the caller may not
    see, so that nobody learns who else an image is shared with."""
    if image.visibility != SHARED:
        raise NotFound("Only shared images have members.")
    member = members.get(member_id)
    if member is None or not (is_owner(image, caller) or member_id == caller.project_id):
        raise NotFound(f"{member_id} not found in the member list of the image {image.id}.")
    return member


def existing_member(image: Image, members: Mapping[str, Member], member_id: str) -> Member:
    member = members.get(member_id)
    if member is None:
        raise NotFound(f"{member_id} not found in the member list of the image {image.id}.")
    return member


class DuplicateMember(DomainError):
    """The project is already a member of the image (HTTP 409, as Glance answers)."""
