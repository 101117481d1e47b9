"""Image sharing (Glance's member API) on moto: who may add, see, accept and remove members, what a
member sees of the image, the image lists of a member, and the refusals with Glance's statuses."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from imagetasks.domain.image_members import MAX_MEMBERS
from tests.support import CREATE_IMAGE, CallCounter, api_event, call, create_image, listed, patch

OWNER, MEMBER, OTHER = "project-a", "project-b", "project-c"


def request(
    images: Any, method: str, path: str, *, project: str = OWNER, body: Any = None, **kwargs: Any
) -> dict[str, Any]:
    return call(images, api_event(method, path, project=project, body=body, **kwargs))


def shared_image(images: Any, **fields: Any) -> dict[str, Any]:
    return create_image(images, {**CREATE_IMAGE, "visibility": "shared", **fields}, project=OWNER)


def add(images: Any, image_id: str, member: str = MEMBER, project: str = OWNER) -> dict[str, Any]:
    return request(images, "POST", f"/v2/images/{image_id}/members", project=project, body={"member": member})


def set_status(
    images: Any, image_id: str, status: str, member: str = MEMBER, project: str = MEMBER, **kwargs: Any
) -> dict[str, Any]:
    path = f"/v2/images/{image_id}/members/{member}"
    return request(images, "PUT", path, project=project, body={"status": status}, **kwargs)


def error(response: dict[str, Any]) -> tuple[int, str]:
    return response["statusCode"], response["json"]["error"]["message"]


# ------------------------------------------------------------------ the member calls
def test_the_owner_adds_a_member_pending_and_the_member_accepts(images: Any) -> None:
    # Given a shared image of project-a
    image = shared_image(images)
    # When project-a adds project-b, then project-b accepts
    added = add(images, image["id"])
    accepted = set_status(images, image["id"], "accepted")

    # Then the member is pending first, accepted after, with Glance's view
    assert added["statusCode"] == 200, added["body"]
    assert set(added["json"]) == {"created_at", "image_id", "member_id", "schema", "status", "updated_at"}
    assert (added["json"]["image_id"], added["json"]["member_id"], added["json"]["status"]) == (
        image["id"],
        MEMBER,
        "pending",
    )
    assert added["json"]["schema"] == "/v2/schemas/member"
    assert accepted["statusCode"] == 200 and accepted["json"]["status"] == "accepted"
    assert accepted["json"]["created_at"] == added["json"]["created_at"]
    shown = request(images, "GET", f"/v2/images/{image['id']}/members/{MEMBER}")
    assert shown["statusCode"] == 200 and shown["json"] == accepted["json"]


def test_the_owner_lists_every_member_a_member_only_itself(images: Any) -> None:
    image = shared_image(images)
    add(images, image["id"], MEMBER)
    add(images, image["id"], OTHER)

    by_owner = request(images, "GET", f"/v2/images/{image['id']}/members")
    by_member = request(images, "GET", f"/v2/images/{image['id']}/members", project=MEMBER)
    by_stranger = request(images, "GET", f"/v2/images/{image['id']}/members", project="project-d")

    assert by_owner["statusCode"] == 200 and by_owner["json"]["schema"] == "/v2/schemas/members"
    assert sorted(m["member_id"] for m in by_owner["json"]["members"]) == [MEMBER, OTHER]
    assert [m["member_id"] for m in by_member["json"]["members"]] == [MEMBER]
    assert by_stranger["statusCode"] == 404  # the image is not visible to a stranger


def test_a_member_does_not_see_another_members_membership(images: Any) -> None:
    image = shared_image(images)
    add(images, image["id"], MEMBER)
    add(images, image["id"], OTHER)

    response = request(images, "GET", f"/v2/images/{image['id']}/members/{OTHER}", project=MEMBER)

    assert error(response) == (404, f"{OTHER} not found in the member list of the image {image['id']}.")


@pytest.mark.parametrize("visibility", ["private", "public", "community"])
def test_only_shared_images_have_members(images: Any, visibility: str) -> None:
    roles = "admin" if visibility == "public" else "member"
    image = create_image(images, {**CREATE_IMAGE, "visibility": visibility}, project=OWNER, roles=roles)

    added = add(images, image["id"])
    members = request(images, "GET", f"/v2/images/{image['id']}/members")

    assert error(added) == (403, f"Not allowed to create members for image {image['id']}.")
    assert error(members) == (
        403,
        f"Not allowed to list members for image {image['id']}: Only shared images have members.",
    )


def test_only_the_owner_adds_and_removes_members(images: Any) -> None:
    image = shared_image(images)
    add(images, image["id"], MEMBER)

    by_member = add(images, image["id"], OTHER, project=MEMBER)
    removed_by_member = request(
        images, "DELETE", f"/v2/images/{image['id']}/members/{MEMBER}", project=MEMBER
    )

    assert error(by_member) == (403, f"Not allowed to create members for image {image['id']}.")
    assert error(removed_by_member) == (403, f"Not allowed to delete members for image {image['id']}.")


def test_only_the_member_sets_its_status(images: Any) -> None:
    image = shared_image(images)
    add(images, image["id"], MEMBER)
    add(images, image["id"], OTHER)

    by_owner = set_status(images, image["id"], "accepted", project=OWNER)
    by_other_member = set_status(images, image["id"], "accepted", member=MEMBER, project=OTHER)
    by_admin = set_status(images, image["id"], "rejected", project="project-z", roles="admin")

    assert error(by_owner) == (403, f"Not allowed to update members for image {image['id']}.")
    assert error(by_other_member) == (403, f"Not allowed to update members for image {image['id']}.")
    assert by_admin["statusCode"] == 200 and by_admin["json"]["status"] == "rejected"


def test_a_duplicate_member_is_409(images: Any) -> None:
    image = shared_image(images)
    add(images, image["id"])

    again = add(images, image["id"])

    assert error(again) == (409, f"Member {MEMBER} is duplicated for image {image['id']}")


def test_the_member_limit_is_413(images: Any) -> None:
    image = shared_image(images)
    for number in range(MAX_MEMBERS):
        assert add(images, image["id"], f"project-{number:03d}")["statusCode"] == 200

    over = add(images, image["id"], "project-over")

    status, message = error(over)
    assert status == 413
    assert f"Attempted: {MAX_MEMBERS + 1}, Maximum: {MAX_MEMBERS}" in message
    members = request(images, "GET", f"/v2/images/{image['id']}/members")["json"]["members"]
    assert len(members) == MAX_MEMBERS


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Member to be added not specified"),
        ({"member": ""}, "Member can't be empty"),
        ({"member": 7}, 'Expected a member in the form: {"member": "<project id>"}'),
        ({"member": "x" * 256}, "at most 255"),
    ],
)
def test_a_bad_member_body_is_400(images: Any, body: Any, message: str) -> None:
    image = shared_image(images)

    response = request(images, "POST", f"/v2/images/{image['id']}/members", body=body)

    assert response["statusCode"] == 400 and message in response["json"]["error"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Status not specified"),
        ({"status": "maybe"}, 'Status must be "pending", "accepted" or "rejected".'),
        ({"status": ["accepted"]}, 'Status must be "pending", "accepted" or "rejected".'),
    ],
)
def test_a_bad_status_is_400(images: Any, body: Any, message: str) -> None:
    image = shared_image(images)
    add(images, image["id"])

    path = f"/v2/images/{image['id']}/members/{MEMBER}"
    response = request(images, "PUT", path, project=MEMBER, body=body)

    assert response["statusCode"] == 400 and message in response["json"]["error"]["message"]


def test_an_unknown_member_is_404(images: Any) -> None:
    image = shared_image(images)

    shown = request(images, "GET", f"/v2/images/{image['id']}/members/{MEMBER}")
    removed = request(images, "DELETE", f"/v2/images/{image['id']}/members/{MEMBER}")

    expected = (404, f"{MEMBER} not found in the member list of the image {image['id']}.")
    assert error(shown) == expected and error(removed) == expected


def test_a_removed_member_no_longer_sees_the_image(images: Any) -> None:
    image = shared_image(images)
    add(images, image["id"])
    set_status(images, image["id"], "accepted")

    removed = request(images, "DELETE", f"/v2/images/{image['id']}/members/{MEMBER}")

    assert removed["statusCode"] == 204 and removed["body"] == ""
    assert request(images, "GET", f"/v2/images/{image['id']}", project=MEMBER)["statusCode"] == 404
    assert image["id"] not in listed(images, MEMBER)


# ------------------------------------------------------------------ what a member sees
def test_a_member_shows_the_image_whatever_its_status_but_cannot_change_it(images: Any) -> None:
    image = shared_image(images)
    before = request(images, "GET", f"/v2/images/{image['id']}", project=MEMBER)
    add(images, image["id"])

    pending = request(images, "GET", f"/v2/images/{image['id']}", project=MEMBER)
    set_status(images, image["id"], "rejected")
    rejected = request(images, "GET", f"/v2/images/{image['id']}", project=MEMBER)
    changed = patch(images, image["id"], [{"op": "replace", "path": "/name", "value": "x"}], project=MEMBER)
    deleted = request(images, "DELETE", f"/v2/images/{image['id']}", project=MEMBER)

    assert before["statusCode"] == 404
    assert pending["statusCode"] == 200 and pending["json"]["id"] == image["id"]
    assert rejected["statusCode"] == 200
    assert changed["statusCode"] == 403 and deleted["statusCode"] == 403
    assert request(images, "GET", f"/v2/images/{image['id']}", project=OTHER)["statusCode"] == 404


def test_a_members_list_shows_accepted_shared_images_and_member_status_chooses(images: Any) -> None:
    # Given three images shared with project-b: accepted, pending, rejected; and one of its own
    accepted, pending, rejected = shared_image(images), shared_image(images), shared_image(images)
    for image in (accepted, pending, rejected):
        add(images, image["id"])
    set_status(images, accepted["id"], "accepted")
    set_status(images, rejected["id"], "rejected")
    own = create_image(images, project=MEMBER)

    # Then its default list has its own and the accepted one; member_status picks the others
    assert set(listed(images, MEMBER)) == {own["id"], accepted["id"]}
    assert set(listed(images, MEMBER, member_status="pending")) == {own["id"], pending["id"]}
    assert set(listed(images, MEMBER, member_status="rejected")) == {own["id"], rejected["id"]}
    assert set(listed(images, MEMBER, member_status="all")) == {
        own["id"],
        accepted["id"],
        pending["id"],
        rejected["id"],
    }
    assert set(listed(images, MEMBER, visibility="shared")) == {accepted["id"]}
    assert set(listed(images, MEMBER, visibility="private")) == {own["id"]}
    assert set(listed(images, MEMBER, owner=OWNER)) == {accepted["id"]}
    # and the other filters apply to shared images too
    assert listed(images, MEMBER, name="nope") == []
    assert listed(images, MEMBER, name="cirros", visibility="shared") == [accepted["id"]]
    assert set(listed(images, MEMBER, id=f"in:{accepted['id']},{pending['id']}")) == {accepted["id"]}
    # and a stranger sees none of them
    assert listed(images, OTHER) == []


def test_a_members_list_pages_through_own_and_shared_images(images: Any) -> None:
    shared = [shared_image(images) for _ in range(3)]
    own = [create_image(images, project=MEMBER) for _ in range(2)]
    for image in shared:
        add(images, image["id"])
        set_status(images, image["id"], "accepted")

    first = listed(images, MEMBER, limit="2")
    second = listed(images, MEMBER, limit="2", marker=first[-1])
    third = listed(images, MEMBER, limit="2", marker=second[-1])

    # Then the pages hold every image once, newest first (the default sort), shared and own merged
    everything = listed(images, MEMBER)
    assert first + second + third == everything
    assert set(everything) == {image["id"] for image in shared + own}
    assert len(first) == len(second) == 2 and len(third) == 1


def test_an_image_made_private_is_no_longer_listed_for_its_members(images: Any) -> None:
    image = shared_image(images)
    add(images, image["id"])
    set_status(images, image["id"], "accepted")

    patch(images, image["id"], [{"op": "replace", "path": "/visibility", "value": "private"}])

    assert image["id"] not in listed(images, MEMBER)
    assert request(images, "GET", f"/v2/images/{image['id']}", project=MEMBER)["statusCode"] == 404


def test_deleting_an_image_deletes_its_members(images: Any, aws: dict[str, str]) -> None:
    image = shared_image(images)
    add(images, image["id"], MEMBER)
    add(images, image["id"], OTHER)

    deleted = request(images, "DELETE", f"/v2/images/{image['id']}")

    assert deleted["statusCode"] == 204
    items = boto3.resource("dynamodb").Table(aws["IMAGES_TABLE"]).scan()["Items"]
    assert [item["id"] for item in items if str(item["id"]).startswith(image["id"])] == []


def test_a_new_image_with_the_id_of_a_deleted_one_has_no_members(images: Any) -> None:
    image_id = "0b5c1e7e-9c1a-4d8e-8f0e-2a6f1d3c4b5a"
    shared_image(images, id=image_id)
    add(images, image_id)
    set_status(images, image_id, "accepted")
    request(images, "DELETE", f"/v2/images/{image_id}")

    # another project takes the id, shared
    create_image(images, {**CREATE_IMAGE, "id": image_id, "visibility": "shared"}, project=OTHER)

    assert request(images, "GET", f"/v2/images/{image_id}", project=MEMBER)["statusCode"] == 404
    assert image_id not in listed(images, MEMBER)


def test_the_member_schemas_are_glances(images: Any) -> None:
    member = request(images, "GET", "/v2/schemas/member")
    members = request(images, "GET", "/v2/schemas/members")

    assert member["statusCode"] == 200 and member["json"]["name"] == "member"
    assert member["json"]["properties"]["status"]["enum"] == ["pending", "accepted", "rejected"]
    assert members["json"]["properties"]["members"]["items"]["name"] == "member"


def test_a_members_list_reads_its_partitions_and_what_is_shared_with_it_never_the_table(images: Any) -> None:
    # Given two images shared with project-b and accepted, and three other images of project-a
    shared = [shared_image(images) for _ in range(2)]
    for image in shared:
        add(images, image["id"])
        set_status(images, image["id"], "accepted")
    for _ in range(3):
        create_image(images, project=OWNER)
    counter = CallCounter(images.images_table().table.client)

    # When project-b lists its images
    found = listed(images, MEMBER)

    # Then it read its own and the public partition and its accepted memberships (a Query each), the
    # images shared with it (a BatchGetItem), then the page's images (a BatchGetItem): no Scan
    assert set(found) == {image["id"] for image in shared}
    assert counter.calls == ["Query", "Query", "Query", "BatchGetItem", "BatchGetItem"]
