"""How many long polls (`GET /v2/tasks/{id}?wait=N`) each project has open: at most `limit` leases
per project, rows of the slots table that expire on their own.

Each poll holds one lease for its wait: a conditional PutItem on one of the project's `limit` lease
rows (taken only when free or expired), deleted when the poll answers. A function that dies
mid-poll leaves a lease that expires after the longest wait, so nothing leaks for long; on AWS this
bounds every Lambda instance together (an in-process counter would bound one instance only).
"""

from __future__ import annotations

import contextlib
import random
import uuid
from typing import Any

from imagetasks.adapters.dynamo import DynamoDBClient, dynamodb_client

LEASE_PREFIX = "long-poll#"


class LongPollLeases:
    def __init__(self, slots_table: str, limit: int, client: DynamoDBClient | None = None) -> None:
        self.slots_table = slots_table
        self.limit = limit
        self._client = client

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            self._client = dynamodb_client()
        return self._client

    def acquire(self, project_id: str, now: float, seconds: float) -> str | None:
        """A lease for one poll of `project_id` lasting `seconds` (its row's key), or None when the
        project already holds `limit` live leases. Starts at a random row: concurrent polls of one
        project rarely try the same row."""
        first = random.randrange(self.limit)  # noqa: S311 - spreads load, not a secret
        holder = uuid.uuid4().hex
        for offset in range(self.limit):
            key = f"{LEASE_PREFIX}{project_id}#{(first + offset) % self.limit}"
            try:
                self.client.put_item(
                    TableName=self.slots_table,
                    Item={
                        "id": {"S": key},
                        "holder": {"S": holder},
                        "lease_expires": {"N": str(int(now + seconds) + 1)},
                    },
                    ConditionExpression="attribute_not_exists(id) OR lease_expires < :now",
                    ExpressionAttributeValues={":now": {"N": str(int(now))}},
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                continue
            return f"{key}|{holder}"
        return None

    def release(self, lease: str) -> None:
        """Give the lease back (only if it is still this poll's: an expired one may be another's)."""
        key, holder = lease.split("|", 1)
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.delete_item(
                TableName=self.slots_table,
                Key={"id": {"S": key}},
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )

    def held(self, project_id: str, now: float) -> int:
        """How many live leases the project holds (for tests and metrics)."""
        count = 0
        for number in range(self.limit):
            item: dict[str, Any] | None = self.client.get_item(
                TableName=self.slots_table,
                Key={"id": {"S": f"{LEASE_PREFIX}{project_id}#{number}"}},
                ConsistentRead=True,
            ).get("Item")
            if item is not None and int(item["lease_expires"]["N"]) >= now:
                count += 1
        return count
