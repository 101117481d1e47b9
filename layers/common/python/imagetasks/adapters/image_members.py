"""An image's members, kept in the images table beside the image (see docs/decisions.md, "Image
members in the images table").

Two kinds of item per shared image:
- the *roster* `<image id>#members`: every member of the image with its status and times (one JSON
  attribute; at most MAX_MEMBERS) and a version each change is conditional on. It answers the
  member calls (list, show, quota, duplicate) with one GetItem;
- one *membership* `<image id>#member#<project>` per member, in the list partition
  `m#<project>#<status>` of the `by_id` index: how a project finds the images shared with it
  (one Query per status it lists), and what `GET /v2/images/{id}` reads to let a member see it.

Roster and memberships change together in one transaction. Both carry the image's creation time: an
image deleted and created again under the same id does not inherit the members of the one before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from imagetasks.adapters.dynamo import ConditionFailed, from_item, to_item, translate
from imagetasks.adapters.indexed_table import IndexedTable
from imagetasks.domain import clock
from imagetasks.domain.image_members import Member, MemberStatus
from imagetasks.domain.images import Image

ROSTER_RECORD = "members"
MEMBERSHIP_RECORD = "member"
TRANSACTION_ITEMS = 100  # DynamoDB's limit of one TransactWriteItems


def roster_key(image_id: str) -> str:
    return f"{image_id}#members"


def membership_key(image_id: str, member_id: str) -> str:
    return f"{image_id}#member#{member_id}"


def shared_partition(member_id: str, status: MemberStatus) -> str:
    """The list partition of the images shared with `member_id` with that status (escaped as the
    image list partitions are, so a project id cannot name another partition)."""
    return f"m#{quote(member_id, safe='')}#{status.value}"


class ImageMembers:
    def __init__(self, table: IndexedTable) -> None:
        self.table = table

    @property
    def _name(self) -> str:
        return self.table.table_name

    def roster(self, image: Image) -> tuple[dict[str, Member], int]:
        """The image's members and the roster's version (0: none yet). A roster left by an earlier
        image of the same id counts as none."""
        item = self.table.get(roster_key(image.id))
        if item is None or item.get("record") != ROSTER_RECORD:
            return {}, 0
        version = int(item.get("version", 0))
        if item.get("image_created_at") != clock.to_stored(image.created_at):
            return {}, version
        members = {
            member_id: Member(
                image_id=image.id,
                member_id=member_id,
                status=MemberStatus(fields["status"]),
                created_at=clock.from_stored(fields["created_at"]),
                updated_at=clock.from_stored(fields["updated_at"]),
            )
            for member_id, fields in json.loads(item.get("members", "{}")).items()
        }
        return members, version

    def membership(self, image: Image, member_id: str) -> Member | None:
        """`member_id`'s membership of the image (one GetItem), if it has one."""
        item = self.table.get(membership_key(image.id, member_id))
        if (
            item is None
            or item.get("record") != MEMBERSHIP_RECORD
            or item.get("image_created_at") != clock.to_stored(image.created_at)
        ):
            return None
        return Member(
            image_id=image.id,
            member_id=member_id,
            status=MemberStatus(item["status"]),
            created_at=clock.from_stored(item["created_at"]),
            updated_at=clock.from_stored(item["updated_at"]),
        )

    def write(
        self,
        image: Image,
        version: int,
        members: dict[str, Member],
        changed: Member | None,
        removed: str | None,
    ) -> bool:
        """Store the roster `members` (replacing version `version`) with the one membership that
        changed (`changed` written, or `removed` deleted), in one transaction; False when someone
        else changed the roster meanwhile (read it again)."""
        roster = {
            "id": roster_key(image.id),
            "record": ROSTER_RECORD,
            "image_id": image.id,
            "image_created_at": clock.to_stored(image.created_at),
            "members": json.dumps(
                {
                    member.member_id: {
                        "status": member.status.value,
                        "created_at": clock.to_stored(member.created_at),
                        "updated_at": clock.to_stored(member.updated_at),
                    }
                    for member in members.values()
                },
                sort_keys=True,
            ),
            "version": version + 1,
        }
        condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(id)"}
            if version == 0
            else {
                "ConditionExpression": "version = :version",
                "ExpressionAttributeValues": {":version": {"N": str(version)}},
            }
        )
        ops: list[dict[str, Any]] = [{"Put": {"TableName": self._name, "Item": to_item(roster), **condition}}]
        if changed is not None:
            ops.append(
                {"Put": {"TableName": self._name, "Item": to_item(self._membership_item(image, changed))}}
            )
        if removed is not None:
            key = {"id": {"S": membership_key(image.id, removed)}}
            ops.append({"Delete": {"TableName": self._name, "Key": key}})
        try:
            self.table.transact(ops)
        except ConditionFailed:
            return False
        return True

    @staticmethod
    def _membership_item(image: Image, member: Member) -> dict[str, Any]:
        return {
            "id": membership_key(image.id, member.member_id),
            "record": MEMBERSHIP_RECORD,
            "image_id": image.id,
            "member_id": member.member_id,
            "status": member.status.value,
            "created_at": clock.to_stored(member.created_at),
            "updated_at": clock.to_stored(member.updated_at),
            "image_created_at": clock.to_stored(image.created_at),
            "list_pk": shared_partition(member.member_id, member.status),
            "sk_id": image.id,
        }

    def removal_ops(self, image_id: str) -> list[dict[str, Any]]:
        """Deletes of every member item of the image (any earlier image of that id's too)."""
        item = self.table.get(roster_key(image_id))
        if item is None or item.get("record") != ROSTER_RECORD:
            return []
        keys = [membership_key(image_id, member_id) for member_id in json.loads(item.get("members", "{}"))]
        keys.append(roster_key(image_id))
        return [{"Delete": {"TableName": self._name, "Key": {"id": {"S": key}}}} for key in keys]

    def remove_all(self, image_id: str) -> None:
        """Delete the image's roster and memberships (before the image itself: see ImagesTable.delete)."""
        ops = self.removal_ops(image_id)
        # The roster goes last, in the last transaction: until then a retry finds what is left.
        for start in range(0, len(ops), TRANSACTION_ITEMS):
            self.table.transact(ops[start : start + TRANSACTION_ITEMS])

    def shared_with(self, member_id: str, statuses: Iterable[MemberStatus]) -> dict[str, str]:
        """The images shared with `member_id` with one of `statuses`: image id → the image's creation
        time as the membership recorded it. One Query (and its pages) per status; no scan."""
        found: dict[str, str] = {}
        for status in statuses:
            kwargs: dict[str, Any] = {
                "TableName": self._name,
                "IndexName": "by_id",
                "KeyConditionExpression": "list_pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": shared_partition(member_id, status)}},
            }
            while True:
                try:
                    response = self.table.client.query(**kwargs)
                except ClientError as error:
                    raise translate(error) from error
                for item in map(from_item, response.get("Items", [])):
                    if item.get("record") == MEMBERSHIP_RECORD:
                        found[str(item["image_id"])] = str(item["image_created_at"])
                start = response.get("LastEvaluatedKey")
                if not start:
                    break
                kwargs["ExclusiveStartKey"] = start
        return found
