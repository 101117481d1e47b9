"""The images table: image records and their list index rows."""

from __future__ import annotations

import builtins
import json
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from imagetasks.adapters.dynamo import ConditionFailed, DynamoDBClient, Guard, from_item, to_item
from imagetasks.adapters.image_members import MEMBERSHIP_RECORD, ImageMembers, membership_key, roster_key
from imagetasks.adapters.indexed_table import INDEX_ROW, Filter, IndexedTable, Page, ReadStats
from imagetasks.auth.identity import Caller
from imagetasks.domain import clock
from imagetasks.domain.errors import ConcurrentUpdate, InvalidRequest, NotFound
from imagetasks.domain.image_listing import Condition, ImageListRequest, indexed_value
from imagetasks.domain.image_members import SHARED, MemberStatus
from imagetasks.domain.images import (
    IMAGE_LIST_SPEC,
    Image,
    image_sort_values,
    partitions_of,
    shared_partitions_of,
)
from imagetasks.domain.listing import SortDir

IMAGE_RECORD = "image"
ATTEMPTS = 5
# A change of an image (PATCH, tags) that meets other writers: tries, the first pause (doubling,
# with full jitter) and the time it may take in all before the request is answered 409.
UPDATE_ATTEMPTS = 8
UPDATE_BACKOFF_SECONDS = 0.02
UPDATE_SECONDS = 3.0
STUB_FIELDS = (
    "name",
    "status",
    "disk_format",
    "container_format",
    "size",
    "owner",
    "created_at",
    "updated_at",
)


def image_to_item(image: Image) -> dict[str, Any]:
    return {
        "id": image.id,
        "record": IMAGE_RECORD,
        "name": image.name,
        "status": image.status.value,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "checksum": image.checksum,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "owner": image.owner,
        "visibility": image.visibility,
        "protected": image.protected,
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "tags": json.dumps(list(image.tags)),
        "os_hidden": image.os_hidden,
        "created_at": clock.to_stored(image.created_at),
        "updated_at": clock.to_stored(image.updated_at),
        "properties": json.dumps(image.properties),
        "bucket": image.bucket,
        "key": image.key,
        "task_ids": json.dumps(list(image.task_ids)),
    }


def image_from_item(item: dict[str, Any]) -> Image:
    values = dict(item)
    values.pop("record", None)
    values["tags"] = tuple(json.loads(item.get("tags", "[]")))
    values["properties"] = json.loads(item.get("properties", "{}"))
    values["task_ids"] = tuple(json.loads(item.get("task_ids", "[]")))
    values["created_at"] = clock.from_stored(item["created_at"])
    values["updated_at"] = clock.from_stored(item["updated_at"])
    return Image.model_validate(values)


def unchanged(image: Image) -> dict[str, Any]:
    """The condition that the stored image is still `image`: its status, update time and tasks
    (add_task changes the tasks without touching updated_at)."""
    tasks_match = "task_ids = :tasks"
    if not image.task_ids:  # an image stored before task_ids were recorded has none
        tasks_match = f"({tasks_match} OR attribute_not_exists(task_ids))"
    return {
        "ConditionExpression": f"#status = :status AND updated_at = :updated AND {tasks_match}",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {
            ":status": {"S": image.status.value},
            ":updated": {"S": clock.to_stored(image.updated_at)},
            ":tasks": {"S": json.dumps(list(image.task_ids))},
        },
    }


#: DynamoDB's TransactWriteItems takes at most this many items.
MAX_TRANSACTION_ITEMS = 100

LEGACY_ROW_KINDS = ("p", "a")  # index rows written before list filters existed: `<id>#p`, `<id>#a`


def row_of(image: Image) -> dict[str, Any]:
    """What an index row of the image carries besides its keys: the fields lists show and filter on."""
    stored = image_to_item(image)
    row: dict[str, Any] = {"image_id": image.id, **{name: stored[name] for name in STUB_FIELDS}}
    row.update({"visibility": image.visibility, "protected": image.protected, "os_hidden": image.os_hidden})
    # For a hash filter that is not the request's partition (both hashes given, or `id=in:`).
    row.update({name: stored[name] for name in ("checksum", "os_hash_value") if stored[name] is not None})
    if image.tags:
        row["tags_set"] = set(image.tags)
    if image.properties:
        row["props"] = {key: indexed_value(value) for key, value in image.properties.items()}
    return row


def filter_of(conditions: tuple[Condition, ...]) -> Filter | None:
    """Residual conditions → one DynamoDB filter expression (AND of them)."""
    if not conditions:
        return None
    parts: list[str] = []
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for number, condition in enumerate(conditions):
        if condition.field == "tag":
            names["#tags"] = "tags_set"
            values[f":c{number}"] = to_item({"v": condition.values[0]})["v"]
            parts.append(f"contains(#tags, :c{number})")
            continue
        if condition.field.startswith("prop:"):
            names["#props"] = "props"
            names[f"#f{number}"] = condition.field[5:]
            path = f"#props.#f{number}"
        else:
            names[f"#f{number}"] = condition.field
            path = f"#f{number}"
        keys = [f":c{number}_{i}" for i in range(len(condition.values))]
        values.update(
            {key: to_item({"v": value})["v"] for key, value in zip(keys, condition.values, strict=True)}
        )
        expression = {
            "eq": f"{path} = {keys[0]}",
            "ne": f"{path} <> {keys[0]} OR attribute_not_exists({path})",
            "ge": f"{path} >= {keys[0]}",
            "lt": f"{path} < {keys[0]}",
            "le": f"{path} <= {keys[0]}",
            "contains": f"contains({path}, {keys[0]})",
            "in": f"{path} IN ({', '.join(keys)})",
            "within": f"{path} BETWEEN {keys[0]} AND {keys[-1]} AND {path} < {keys[-1]}",
            "outside": f"{path} < {keys[0]} OR {path} >= {keys[-1]}",
        }[condition.op]
        parts.append(f"({expression})")
    return Filter(" AND ".join(parts), names, values)


class ImagesTable:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self.table = IndexedTable(table_name, IMAGE_LIST_SPEC, client)
        self.members = ImageMembers(self.table)
        self.last_page: Page | None = None

    def _row_ops(self, image: Image) -> list[dict[str, Any]]:
        projected = row_of(image)
        sort_values = {f"sk_{key}": value for key, value in image_sort_values(image).items()}
        return [
            {
                "Put": {
                    "TableName": self.table.table_name,
                    "Item": to_item(
                        {
                            "id": f"{image.id}#{partition}",
                            "record": INDEX_ROW,
                            "record_id": image.id,
                            "list_pk": partition,
                            **sort_values,
                            **projected,
                        }
                    ),
                }
            }
            for partition in partitions_of(image)
        ]

    def _write_ops(self, image: Image, condition: dict[str, Any]) -> list[dict[str, Any]]:
        main: dict[str, Any] = {
            "Put": {"TableName": self.table.table_name, "Item": to_item(image_to_item(image))}
        }
        main["Put"].update(condition)
        return [main, *self._row_ops(image)]

    def create(self, image: Image, guard: Guard | None = None) -> bool:
        """Store a new image; False if an image with that id already exists (a retried step).

        With a `guard` (TasksTable.processing_guard), only while the guard holds: the guard's error
        (TaskNotProcessing) when it does not, and nothing is written."""
        ops = self._write_ops(image, {"ConditionExpression": "attribute_not_exists(id)"})
        return self._transact_guarded(ops, guard)

    def _transact_guarded(self, ops: list[dict[str, Any]], guard: Guard | None) -> bool:
        """Run the transaction; False when its own condition fails. A guarded write that clashed
        with a change of the task (its end being recorded) is tried again: the next attempt sees
        the task as it is now."""
        for attempt in range(ATTEMPTS):
            try:
                self.table.transact(ops, guard)
            except ConditionFailed:
                return False
            except ConcurrentUpdate:
                if guard is None or attempt == ATTEMPTS - 1:
                    raise
                continue
            return True
        return False  # not reached: the last attempt returns or raises

    def replace(self, before: Image, after: Image, guard: Guard | None = None) -> bool:
        """Write `after` over `before` (same id) in one transaction, its index rows moved with it;
        False when the stored image is no longer `before` (changed or deleted meanwhile). With a
        `guard`, only while it holds (see `create`)."""
        kept = set(partitions_of(after))
        ops = self._write_ops(after, unchanged(before))
        ops += [
            {"Delete": {"TableName": self.table.table_name, "Key": {"id": {"S": f"{before.id}#{partition}"}}}}
            for partition in partitions_of(before)
            if partition not in kept
        ]
        if len(ops) + (guard is not None) > MAX_TRANSACTION_ITEMS:
            # Hiding or showing an image moves every list row it has (os_hidden is part of each
            # row's partition): with many tags and extra properties, more than one write may hold.
            raise InvalidRequest(
                f"This change would rewrite {len(ops) - 1} list entries of the image in one write, "
                f"more than one write can hold ({MAX_TRANSACTION_ITEMS} items). Remove some of its "
                f"{len(after.tags) + len(after.properties)} tags and extra properties first (each "
                "adds entries), make the change, then add them back."
            )
        return self._transact_guarded(ops, guard)

    def update(self, image_id: str, change: Callable[[Image], Image]) -> Image:
        """Read the image, `change` it and write the result conditionally (index rows moved with it),
        reading and changing it again when someone else wrote it meanwhile: no update is lost.
        NotFound when there is no such image; ConcurrentUpdate (409, try again) when it kept
        changing for UPDATE_ATTEMPTS tries or UPDATE_SECONDS: writers that clash wait a random,
        growing moment before trying again, so a burst of them spreads out instead of clashing again."""
        deadline = time.monotonic() + UPDATE_SECONDS
        for attempt in range(UPDATE_ATTEMPTS):
            before = self.get(image_id)
            if before is None:
                raise NotFound(f"No image found with ID {image_id}")
            after = change(before)
            try:
                if self.replace(before, after):
                    return after
            except ConcurrentUpdate:  # DynamoDB's TransactionConflict: another write at the same time
                pass
            pause = random.uniform(0, UPDATE_BACKOFF_SECONDS * 2**attempt)  # noqa: S311 (jitter, not a secret)
            if attempt == UPDATE_ATTEMPTS - 1 or time.monotonic() + pause > deadline:
                break
            time.sleep(pause)
        raise ConcurrentUpdate(f"Image {image_id} kept changing during the request; try again")

    def get(self, image_id: str) -> Image | None:
        item = self.table.get(image_id)
        if item is None or item.get("record") != IMAGE_RECORD:
            return None
        return image_from_item(item)

    def visible_to(self, image: Image, caller: Caller) -> bool:
        """Glance's rule: own images, every image for admins, public and community images for all,
        and a shared image for its members, whatever their status (one GetItem of the membership)."""
        if caller.can_see(image.owner) or image.visibility in ("public", "community"):
            return True
        return image.visibility == SHARED and self.members.membership(image, caller.project_id) is not None

    def accepted_member(self, image: Image, project_id: str) -> bool:
        """Whether `project_id` accepted the sharing of the image (then it may convert or export it)."""
        if image.visibility != SHARED:
            return False
        member = self.members.membership(image, project_id)
        return member is not None and member.status is MemberStatus.ACCEPTED

    def get_visible(self, image_id: str, caller: Caller) -> Image:
        image = self.get(image_id)
        if image is None or not self.visible_to(image, caller):
            raise NotFound(f"No image found with ID {image_id}")
        return image

    def add_task(self, image_id: str, task_id: str, guard: Guard | None = None) -> None:
        """Record that a task worked on the image (for GET /v2/images/{id}/tasks); with a `guard`,
        only while it holds (see `create`). Only the main item changes: index rows do not carry tasks."""
        for _ in range(ATTEMPTS):
            image = self.get(image_id)
            if image is None or task_id in image.task_ids:
                return
            updated = image.model_copy(update={"task_ids": (*image.task_ids, task_id)})
            condition = {
                "ConditionExpression": "task_ids = :before",
                "ExpressionAttributeValues": {":before": {"S": json.dumps(list(image.task_ids))}},
            }
            try:
                self.table.transact(self._write_ops(updated, condition)[:1], guard)
                return
            except ConditionFailed:
                continue
        raise ConcurrentUpdate(f"Image {image_id} kept changing")

    def delete(self, image: Image) -> None:
        """Delete the image, its index rows and its members. The members go first; the image's own
        transaction then requires that no member was added meanwhile (else it removes them again)."""
        ops = [*self._delete_ops(image), self._no_members(image.id)]
        for attempt in range(ATTEMPTS):
            self.members.remove_all(image.id)
            try:
                self.table.transact(ops)
                return
            except ConditionFailed:
                if attempt == ATTEMPTS - 1:
                    raise ConcurrentUpdate(
                        f"Image {image.id} kept getting members while being deleted"
                    ) from None

    def delete_if_unchanged(self, image: Image) -> bool:
        """Delete the image only if it is still exactly `image` (same status, update time and
        tasks) and has no members: False, and nothing deleted, when someone changed it meanwhile
        (an import began) or shared it."""
        ops = self._delete_ops(image)
        ops[0]["Delete"].update(unchanged(image))
        try:
            self.table.transact([*ops, self._no_members(image.id)])
        except (ConditionFailed, ConcurrentUpdate):
            return False
        return True

    def _no_members(self, image_id: str) -> dict[str, Any]:
        """A transaction item that holds only while the image has no member roster."""
        return {
            "Delete": {
                "TableName": self.table.table_name,
                "Key": {"id": {"S": roster_key(image_id)}},
                "ConditionExpression": "attribute_not_exists(id)",
            }
        }

    def _delete_ops(self, image: Image) -> list[dict[str, Any]]:
        """The image's main item first, then its index rows (and rows of the legacy kinds)."""
        row_ids = [f"{image.id}#{partition}" for partition in partitions_of(image)]
        row_ids += [f"{image.id}#{kind}" for kind in LEGACY_ROW_KINDS]
        return [
            {"Delete": {"TableName": self.table.table_name, "Key": {"id": {"S": key}}}}
            for key in [image.id, *dict.fromkeys(row_ids)]
        ]

    def images_of_rows(self, rows: list[dict[str, Any]]) -> list[Image]:
        """The full images of a list page, in the page's order (one BatchGetItem per 100)."""
        found = self._batch_get([row["image_id"] for row in rows])
        return [found[row["image_id"]] for row in rows if row["image_id"] in found]

    def _batch_get(self, ids: list[str]) -> dict[str, Image]:
        items = self._batch_items(ids)
        return {
            key: image_from_item(item) for key, item in items.items() if item.get("record") == IMAGE_RECORD
        }

    def _batch_items(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The items with these ids (one BatchGetItem per 100), by id."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            batch = [{"id": {"S": key}} for key in keys[start : start + 100]]
            request: dict[str, Any] = {self.table.table_name: {"Keys": batch}}
            while request:
                response = self.table.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table.table_name, []):
                    plain = from_item(item)
                    found[str(plain["id"])] = plain
                request = response.get("UnprocessedKeys") or {}
        return found

    def list(self, caller: Caller, request: ImageListRequest, moment: datetime) -> list[dict[str, Any]]:
        """One page of index rows (`image_id` and the stub fields) in the request's order: one Query
        per partition the request names, merged; `id=in:` reads those images instead."""
        self.last_page = Page()
        start_value: str | None = None
        if request.marker is not None:
            marker = self.get(request.marker)
            if marker is None or not self.visible_to(marker, caller):
                raise InvalidRequest(f"Image with the given id {request.marker} was not found")
            start_value = image_sort_values(marker)[request.sort_key]
        if request.ids is not None:
            return self._list_ids(caller, request, start_value)
        if request.limit == 0 or not (request.partitions or request.member_statuses):
            return []
        condition = filter_of(request.conditions)
        rows: dict[str, dict[str, Any]] = {}
        for partition in request.partitions:
            page = self.table.query_page(
                ("", partition),
                request.sort_key,
                request.sort_dir,
                request.limit,
                (request.marker, start_value) if request.marker and start_value is not None else None,
                lambda row: True,  # the partitions themselves are what the caller may see
                int(moment.timestamp()),
                row_id=f"{request.marker}#{partition}",
                key_range=request.key_range,
                condition=condition,
            )
            self.last_page.stats.calls += page.stats.calls
            self.last_page.stats.items_read += page.stats.items_read
            for row in page.items:
                rows.setdefault(row["image_id"], row)
        if request.member_statuses:
            shared = self._shared_images(caller, request)
            for row in self._matching_rows(shared, request, start_value, shared=True):
                rows.setdefault(row["image_id"], row)
        ordered = sorted(
            rows.values(),
            key=lambda row: str(row[f"sk_{request.sort_key}"]),
            reverse=request.sort_dir is SortDir.DESC,
        )
        self.last_page.items = ordered[: request.limit]
        return self.last_page.items

    def _list_ids(
        self, caller: Caller, request: ImageListRequest, start_value: str | None
    ) -> builtins.list[dict[str, Any]]:
        """`id=in:...`: the named images the caller may see, filtered and sorted here (one BatchGetItem)."""
        assert request.ids is not None and self.last_page is not None
        # With the caller's memberships of the named images, in the same read.
        memberships = (
            [membership_key(image_id, caller.project_id) for image_id in request.ids]
            if request.member_statuses
            else []
        )
        items = self._batch_items([*request.ids, *memberships])
        found = [image_from_item(item) for item in items.values() if item.get("record") == IMAGE_RECORD]
        self.last_page.stats = ReadStats(calls=1, items_read=len(items))
        rows = self._matching_rows(found, request, start_value, shared=False)
        shared = [
            image
            for image in found
            if image.visibility == SHARED
            and (membership := items.get(membership_key(image.id, caller.project_id))) is not None
            and membership.get("record") == MEMBERSHIP_RECORD
            and membership.get("status") in request.member_statuses
            and membership.get("image_created_at") == clock.to_stored(image.created_at)
        ]
        rows += self._matching_rows(shared, request, start_value, shared=True)
        rows = list({row["image_id"]: row for row in reversed(rows)}.values())
        rows.sort(
            key=lambda row: str(row[f"sk_{request.sort_key}"]), reverse=request.sort_dir is SortDir.DESC
        )
        self.last_page.items = rows[: request.limit]
        return self.last_page.items

    def _shared_images(self, caller: Caller, request: ImageListRequest) -> builtins.list[Image]:
        """The shared images the caller's project is a member of with one of the request's statuses:
        one Query per status, then one BatchGetItem per 100 images."""
        assert self.last_page is not None
        statuses = [MemberStatus(status) for status in request.member_statuses]
        memberships = self.members.shared_with(caller.project_id, statuses)
        self.last_page.stats.calls += len(statuses)
        images = self._batch_get(list(memberships))
        return [
            image
            for image in images.values()
            if image.visibility == SHARED and memberships[image.id] == clock.to_stored(image.created_at)
        ]

    def _matching_rows(
        self,
        images: builtins.list[Image],
        request: ImageListRequest,
        start_value: str | None,
        *,
        shared: bool,
    ) -> builtins.list[dict[str, Any]]:
        """The index rows of `images` that the request's partitions (or, for images shared with the
        caller, its shared partitions), key range, conditions and marker let through."""
        scopes = set(request.shared_partitions if shared else request.partitions)
        low, high = request.key_range
        rows = []
        for image in images:
            values = image_sort_values(image)
            row = {**row_of(image), **{f"sk_{key}": value for key, value in values.items()}}
            sort_value = values[request.sort_key]
            if not scopes.intersection(shared_partitions_of(image) if shared else partitions_of(image)):
                continue
            if (low is not None and sort_value < low) or (high is not None and sort_value > high):
                continue
            if not all(condition.matches(row) for condition in request.conditions):
                continue
            if start_value is not None and (
                sort_value <= start_value if request.sort_dir is SortDir.ASC else sort_value >= start_value
            ):
                continue
            rows.append(row)
        return rows
