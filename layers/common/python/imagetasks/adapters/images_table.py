"""The images table: image records and their list index rows."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from imagetasks.adapters.dynamo import ConditionFailed, DynamoDBClient, Guard, from_item, to_item
from imagetasks.adapters.indexed_table import IndexedTable, Page
from imagetasks.auth.identity import Caller
from imagetasks.domain import clock
from imagetasks.domain.errors import ConcurrentUpdate, NotFound
from imagetasks.domain.images import IMAGE_LIST_SPEC, Image, image_sort_values
from imagetasks.domain.listing import ListRequest

IMAGE_RECORD = "image"
ATTEMPTS = 5
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


class ImagesTable:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self.table = IndexedTable(table_name, IMAGE_LIST_SPEC, client)
        self.last_page: Page | None = None

    def _write_ops(self, image: Image, condition: dict[str, Any]) -> list[dict[str, Any]]:
        stored = image_to_item(image)
        rows = self.table.index_rows(
            image.id,
            image.owner,
            {},
            image_sort_values(image),
            {"image_id": image.id, **{name: stored[name] for name in STUB_FIELDS}},
        )
        return self.table.put_ops(to_item(stored), rows, condition)

    def create(self, image: Image, guard: Guard | None = None) -> bool:
        """Store a new image; False if an image with that id already exists (a retried step).

        With a `guard` (TasksTable.processing_guard), only while the guard holds: the guard's error
        (TaskNotProcessing) when it does not, and nothing is written."""
        ops = self._write_ops(image, {"ConditionExpression": "attribute_not_exists(id)"})
        for attempt in range(ATTEMPTS):
            try:
                self.table.transact(ops, guard)
            except ConditionFailed:
                return False
            except ConcurrentUpdate:
                # A guarded write clashed with a change of the task (its end being recorded): the
                # next attempt sees the task as it is now.
                if guard is None or attempt == ATTEMPTS - 1:
                    raise
                continue
            return True
        return False  # not reached: the last attempt returns or raises

    def get(self, image_id: str) -> Image | None:
        item = self.table.get(image_id)
        if item is None or item.get("record") != IMAGE_RECORD:
            return None
        return image_from_item(item)

    def get_visible(self, image_id: str, caller: Caller) -> Image:
        image = self.get(image_id)
        if image is None or not caller.can_see(image.owner):
            raise NotFound(f"No image found with ID {image_id}")
        return image

    def add_task(self, image_id: str, task_id: str, guard: Guard | None = None) -> None:
        """Record that a task worked on the image (for GET /v2/images/{id}/tasks); with a `guard`,
        only while it holds (see `create`)."""
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
                self.table.transact(self._write_ops(updated, condition), guard)
                return
            except ConditionFailed:
                continue
        raise ConcurrentUpdate(f"Image {image_id} kept changing")

    def delete(self, image: Image) -> None:
        ops: list[dict[str, Any]] = [
            {"Delete": {"TableName": self.table.table_name, "Key": {"id": {"S": image.id}}}}
        ]
        for kind in IMAGE_LIST_SPEC.partitions_of(image.owner, {}):
            ops.append(
                {"Delete": {"TableName": self.table.table_name, "Key": {"id": {"S": f"{image.id}#{kind}"}}}}
            )
        self.table.transact(ops)

    def images_of_rows(self, rows: list[dict[str, Any]]) -> list[Image]:
        """The full images of a list page, in the page's order (one BatchGetItem per 100)."""
        ids = [row["image_id"] for row in rows]
        found: dict[str, Image] = {}
        for start in range(0, len(ids), 100):
            keys = [{"id": {"S": image_id}} for image_id in ids[start : start + 100]]
            request: dict[str, Any] = {self.table.table_name: {"Keys": keys}}
            while request:
                response = self.table.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table.table_name, []):
                    image = image_from_item(from_item(item))
                    found[image.id] = image
                request = response.get("UnprocessedKeys") or {}
        return [found[image_id] for image_id in ids if image_id in found]

    def list(self, caller: Caller, request: ListRequest, moment: datetime) -> list[dict[str, Any]]:
        def marker_sort_values(image_id: str) -> dict[str, str] | None:
            image = self.get(image_id)
            return image_sort_values(image) if image is not None and caller.can_see(image.owner) else None

        page = self.table.list_visible(caller, request, moment, "Image", marker_sort_values)
        if page is None:
            return []
        self.last_page = page
        return page.items
