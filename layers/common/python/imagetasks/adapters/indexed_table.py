"""A table whose records are listed through index rows (see imagetasks.domain.listing).

A record is one main item (key `id`) plus one index row per list partition (key `<id>#<kind>`).
Main item and index rows are always written together in one transaction, so a list never shows a
status the main item does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from imagetasks.adapters.dynamo import DynamoDBClient, Guard, TableAdapter, from_item, to_item, translate
from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.listing import UUID_LIKE, ListRequest, ListSpec, SortDir

INDEX_ROW = "index"


@dataclass
class ReadStats:
    """How much a list cost: Query calls made and items DynamoDB read (for tests and benchmarks)."""

    calls: int = 0
    items_read: int = 0


@dataclass(frozen=True)
class Filter:
    """A filter expression with its placeholders (names `#...`, values `:...`)."""

    expression: str
    names: dict[str, str]
    values: dict[str, Any]


@dataclass
class Page:
    items: list[dict[str, Any]] = field(default_factory=list)
    stats: ReadStats = field(default_factory=ReadStats)


def list_scope(caller: Caller, requested_owner: str | None) -> tuple[bool, str | None]:
    """Which partition a list reads: (whether the caller sees anything, owner or None for all projects).

    Admins get the owner they ask for, or every project; members get their own project, and nothing
    at all (not an error) when they ask for another owner."""
    if caller.is_admin:
        return True, requested_owner
    if requested_owner is not None and requested_owner != caller.project_id:
        return False, None
    return True, caller.project_id


class IndexedTable(TableAdapter):
    def __init__(self, table_name: str, spec: ListSpec, client: DynamoDBClient | None = None) -> None:
        super().__init__(table_name, client)
        self.spec = spec

    def index_rows(
        self,
        record_id: str,
        owner: str,
        filter_values: Mapping[str, str],
        sort_values: Mapping[str, str],
        projected: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        rows = []
        for kind, partition in self.spec.partitions_of(owner, filter_values).items():
            row = {
                "id": f"{record_id}#{kind}",
                "record": INDEX_ROW,
                "record_id": record_id,
                "list_pk": partition,
                **{f"sk_{key}": value for key, value in sort_values.items()},
                **projected,
            }
            rows.append(to_item(row))
        return rows

    def get(self, record_id: str) -> dict[str, Any] | None:
        try:
            response = self.client.get_item(
                TableName=self.table_name, Key={"id": {"S": record_id}}, ConsistentRead=True
            )
        except ClientError as error:
            raise translate(error) from error
        item = response.get("Item")
        return from_item(item) if item else None

    def transact(self, items: list[dict[str, Any]], guard: Guard | None = None) -> None:
        """Write `items` in one transaction; with a `guard`, only while the guard's condition holds."""
        if guard is not None:
            items = [guard.op(), *items]
        try:
            self.client.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
        except ClientError as error:
            raise translate(error, guard) from error

    def put_ops(
        self, main: dict[str, Any], rows: list[dict[str, Any]], condition: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Transaction items writing a record: the main item under `condition`, then its index rows."""
        ops: list[dict[str, Any]] = [{"Put": {"TableName": self.table_name, "Item": main, **condition}}]
        ops += [{"Put": {"TableName": self.table_name, "Item": row}} for row in rows]
        return ops

    def list_visible(
        self,
        caller: Caller,
        request: ListRequest,
        moment: datetime,
        record_name: str,
        marker_sort_values: Callable[[str], Mapping[str, str] | None],
    ) -> Page | None:
        """One page of the index rows `caller` may see, or None when the request shows nothing.

        `marker_sort_values(id)` gives the marker record's sort values, or None when the caller may not
        see it; such a marker is refused the way Glance refuses it ("<record_name> with the given id ...")."""
        visible, scope = list_scope(caller, request.owner)
        if not visible:
            return None
        start_after = None
        if request.marker is not None:
            sort_values = marker_sort_values(request.marker)
            if sort_values is None:
                raise InvalidRequest(f"{record_name} with the given id {request.marker} was not found")
            start_after = (request.marker, sort_values[request.sort_key])
        if request.record_id is not None:
            return self.record_page(
                self.spec.partition(scope, request.filters),
                request.record_id,
                request.sort_key,
                request.sort_dir,
                request.limit,
                start_after[1] if start_after else None,
                lambda row: caller.can_see(row["owner"]),
                int(moment.timestamp()),
            )
        return self.query_page(
            self.spec.partition(scope, request.filters),
            request.sort_key,
            request.sort_dir,
            request.limit,
            start_after,
            lambda row: caller.can_see(row["owner"]),
            int(moment.timestamp()),
        )

    def record_page(
        self,
        partition: tuple[str, str],
        record_id: str,
        sort_key: str,
        sort_dir: SortDir,
        limit: int,
        start_value: str | None,
        visible: Callable[[dict[str, Any]], bool],
        now_epoch: int,
    ) -> Page:
        """Glance's `id` filter: the record's own index row for this partition (one GetItem), if the
        record is in the partition (so it matches the other filters), visible, not expired and after
        the marker's sort value `start_value`. An id that is no UUID names no record (no read)."""
        kind, partition_key = partition
        page = Page()
        if limit == 0 or not UUID_LIKE.match(record_id):
            return page
        try:
            response = self.client.get_item(
                TableName=self.table_name, Key={"id": {"S": f"{record_id}#{kind}"}}, ConsistentRead=True
            )
        except ClientError as error:
            raise translate(error) from error
        page.stats.calls = 1
        item = response.get("Item")
        if not item:
            return page
        page.stats.items_read = 1
        row = from_item(item)
        if row.get("record") != INDEX_ROW or row.get("list_pk") != partition_key or not visible(row):
            return page
        if row.get("expires_at") is not None and int(row["expires_at"]) <= now_epoch:
            return page
        value = str(row[f"sk_{sort_key}"])
        if start_value is not None and (
            value <= start_value if sort_dir is SortDir.ASC else value >= start_value
        ):
            return page
        page.items.append(row)
        return page

    def query_page(
        self,
        partition: tuple[str, str],
        sort_key: str,
        sort_dir: SortDir,
        limit: int,
        start_after: tuple[str, str] | None,
        visible: Callable[[dict[str, Any]], bool],
        now_epoch: int,
        *,
        row_id: str | None = None,
        key_range: tuple[str | None, str | None] = (None, None),
        condition: Filter | None = None,
    ) -> Page:
        """Up to `limit` visible rows of one partition in sort order, after (record id, sort value).

        Rows whose `expires_at` has passed are skipped by DynamoDB itself (a filter expression): they
        are read but not returned, so a page reads about `limit` items plus any expired ones that
        TTL has not deleted yet.

        `row_id` names the start row's id when it is not `<record id>#<kind>`; `key_range` bounds the
        sort attribute (inclusive, a key condition: read cost only for rows inside); `condition` is a
        further filter expression (rows it drops are read all the same: `stats.items_read` says how
        many)."""
        kind, partition_key = partition
        page = Page()
        if limit == 0:
            return page
        start_key: dict[str, Any] | None = None
        if start_after is not None:
            record_id, sort_value = start_after
            start_key = {
                "id": {"S": row_id or f"{record_id}#{kind}"},
                "list_pk": {"S": partition_key},
                f"sk_{sort_key}": {"S": sort_value},
            }
        while len(page.items) < limit:
            key_condition, values = (
                "list_pk = :pk",
                {":pk": {"S": partition_key}, ":now": {"N": str(now_epoch)}},
            )
            low, high = key_range
            if low is not None and high is not None:
                key_condition += " AND #sk BETWEEN :low AND :high"
            elif low is not None:
                key_condition += " AND #sk >= :low"
            elif high is not None:
                key_condition += " AND #sk <= :high"
            values.update({k: {"S": v} for k, v in ((":low", low), (":high", high)) if v is not None})
            names = {"#sk": f"sk_{sort_key}"} if low is not None or high is not None else {}
            expression = "(attribute_not_exists(expires_at) OR expires_at > :now)"
            if condition is not None:
                expression += f" AND {condition.expression}"
                names.update(condition.names)
                values.update(condition.values)
            kwargs: dict[str, Any] = {
                "TableName": self.table_name,
                "IndexName": self.spec.index_name(sort_key),
                "KeyConditionExpression": key_condition,
                "FilterExpression": expression,
                "ExpressionAttributeValues": values,
                "ScanIndexForward": sort_dir is SortDir.ASC,
                "Limit": limit - len(page.items),
                "ReturnConsumedCapacity": "TOTAL",
            }
            if names:
                kwargs["ExpressionAttributeNames"] = names
            if start_key:
                kwargs["ExclusiveStartKey"] = start_key
            try:
                response = self.client.query(**kwargs)
            except ClientError as error:
                raise translate(error) from error
            page.stats.calls += 1
            page.stats.items_read += int(response.get("ScannedCount", 0))
            page.items += [row for row in map(from_item, response.get("Items", [])) if visible(row)]
            start_key = response.get("LastEvaluatedKey")
            if not start_key:
                break
        return page
