"""DynamoDB plumbing shared by the tables: serialisation, client construction, error translation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from imagetasks.domain.errors import ConcurrentUpdate, DomainError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient as DynamoDBClient  # re-exported for the tables
else:
    DynamoDBClient = Any

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


class TransientError(DomainError):
    """AWS asked us to slow down or failed on its side; the same call may succeed if retried.

    The workflow's Retry policy matches this class name."""


class ConditionFailed(DomainError):
    """A conditional write's condition did not hold; `reasons` has one code per transaction item."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("A conditional write was refused")
        self.reasons = list(reasons)


@dataclass(frozen=True)
class Guard:
    """A condition a transaction depends on without writing it: a `ConditionCheck` placed first in
    the transaction. When its condition fails, the refusal means `refused`, not a clash on the
    items written (see `translate`)."""

    check: dict[str, Any]  # the ConditionCheck's parameters (TableName, Key, ConditionExpression, ...)
    refused: DomainError

    def op(self) -> dict[str, Any]:
        return {"ConditionCheck": self.check}


def dynamodb_client(client: DynamoDBClient | None = None) -> DynamoDBClient:
    return client if client is not None else boto3.client("dynamodb")


class TableAdapter:
    """One DynamoDB table, with a client given (tests) or built at first use (never at import)."""

    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self.table_name = table_name
        self._client = client

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            self._client = dynamodb_client()
        return self._client


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values → DynamoDB attribute values, leaving out Nones (absent, not NULL)."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
    return {k: (int(v) if isinstance(v, Decimal) else v) for k, v in plain.items()}


def translate(error: ClientError, guard: Guard | None = None) -> DomainError:
    """The one place where DynamoDB error codes become domain errors. With a `guard` (the first item
    of the transaction), a transaction cancelled because the guard's condition failed is the
    guard's own error, whatever happened to the other items."""
    code = error.response.get("Error", {}).get("Code", "")
    if code in TRANSIENT_CODES:
        return TransientError("The task store is busy; the operation will be retried.")
    if code == "ConditionalCheckFailedException":
        return ConditionFailed(["ConditionalCheckFailed"])
    if code == "TransactionCanceledException":
        reasons = [r.get("Code", "None") for r in error.response.get("CancellationReasons", [])]
        if guard is not None and reasons and reasons[0] == "ConditionalCheckFailed":
            return guard.refused
        if any(
            r in ("TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded") for r in reasons
        ):
            return ConcurrentUpdate("Another change to the same task happened at the same time")
        return ConditionFailed(reasons)
    return DomainError("The task store refused the operation")
