"""Work-arounds for moto behaviour that real AWS does not have.

moto's DynamoDB `transact_write_items` deep-copies every table it touches to be able to roll back;
another thread writing to the same table during that copy makes it fail with "dictionary changed
size during iteration". Real DynamoDB serialises conflicting writes itself (a conflict is a
`TransactionConflict`, which the adapters translate and retry). Locally, handlers run in many
threads at once, so the writes of moto's DynamoDB backend are serialised with one lock, held only
for the duration of each backend call (they never call back into our handlers).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_PATCHED = "_imagetasks_serialised"


def serialise_dynamodb_writes() -> None:
    """Idempotent: patch moto's DynamoDB backend write methods to run one at a time."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in _WRITES:
        method = getattr(DynamoDBBackend, name)
        if getattr(method, _PATCHED, False):
            continue
        setattr(DynamoDBBackend, name, _serialised(method))


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    setattr(run, _PATCHED, True)
    return run
