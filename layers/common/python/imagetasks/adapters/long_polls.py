"""How many long polls (`GET /v2/tasks/{id}?wait=N`) each project has open: at most `limit` leases
per project, rows of the tasks table (beside the tasks, never listed: no index row, no `record`)
that expire on their own.

Each poll holds one lease for its wait: a conditional UpdateItem on one of the project's `limit`
lease rows (taken only when free or expired), expired again when the poll answers. Only UpdateItem:
the API's role writes the tasks table already, and may not write the slots table. A function that dies
mid-poll leaves a lease that expires after the longest wait, so nothing leaks for long; on AWS this
bounds every Lambda instance together (an in-process counter would bound one instance only).
"""

from __future__ import annotations

import contextlib
import random
import uuid
from typing import Any

from imagetasks.adapters.dynamo import DynamoDBClient, TableAdapter

LEASE_PREFIX = "long-poll#"
LEASE_ROW_TTL_SECONDS = 24 * 3600


class LongPollLeases(TableAdapter):
    def __init__(self, table_name: str, limit: int, client: DynamoDBClient | None = None) -> None:
        super().__init__(table_name, client)
        self.limit = limit

    def acquire(self, project_id: str, now: float, seconds: float) -> str | None:
        """A lease for one poll of `project_id` lasting `seconds` (its row's key), or None when the
        project already holds `limit` live leases. Starts at a random row: concurrent polls of one
        project rarely try the same row."""
        first = random.randrange(self.limit)  # noqa: S311 - spreads load, not a secret
        holder = uuid.uuid4().hex
        for offset in range(self.limit):
            key = f"{LEASE_PREFIX}{project_id}#{(first + offset) % self.limit}"
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key={"id": {"S": key}},
                    UpdateExpression="SET holder = :holder, lease_expires = :until, expires_at = :gone",
                    ConditionExpression="attribute_not_exists(id) OR lease_expires < :now",
                    ExpressionAttributeValues={
                        ":holder": {"S": holder},
                        ":until": {"N": str(int(now + seconds) + 1)},
                        ":now": {"N": str(int(now))},
                        # The table's TTL removes a project's lease rows a day after their last use.
                        ":gone": {"N": str(int(now) + LEASE_ROW_TTL_SECONDS)},
                    },
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                continue
            return f"{key}|{holder}"
        return None

    def release(self, lease: str) -> None:
        """Give the lease back (only if it is still this poll's: an expired one may be another's)."""
        key, holder = lease.split("|", 1)
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": key}},
                UpdateExpression="SET lease_expires = :free",
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}, ":free": {"N": "0"}},
            )

    def held(self, project_id: str, now: float) -> int:
        """How many live leases the project holds (for tests and metrics)."""
        count = 0
        for number in range(self.limit):
            item: dict[str, Any] | None = self.client.get_item(
                TableName=self.table_name,
                Key={"id": {"S": f"{LEASE_PREFIX}{project_id}#{number}"}},
                ConsistentRead=True,
            ).get("Item")
            if item is not None and int(item["lease_expires"]["N"]) >= now:
                count += 1
        return count
