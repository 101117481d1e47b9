"""`Idempotency-Key` on `POST /v2/tasks`: a client that retries a create (its answer was lost) gets
the task its first attempt made instead of a second one.

Powertools' idempotency utility keeps one record per (project, key) in the idempotency table for
IDEMPOTENCY_SECONDS, with a hash of the body: the same key and body again answer the task the first
request made; the same key with another body is refused (422); a request while the first one with its
key is still being handled is refused with a retry hint (409). A create that fails (400, 500...)
leaves no record, so the key may be used again. Powertools' exceptions become domain errors here and
nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from imagetasks.config import settings
from imagetasks.domain.errors import IdempotencyKeyReused, InvalidRequest, RequestInProgress
from imagetasks.domain.tasks import Task

HEADER = "Idempotency-Key"
IDEMPOTENCY_SECONDS = 24 * 3600
# Printable ASCII (space to ~), not starting or ending with a space (proxies trim those), 1 to 255.
_KEY = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?")
KEY_MESSAGE = (
    f"The {HEADER} header must be 1 to 255 printable ASCII characters, not starting or ending with a space."
)
REUSED_MESSAGE = f"This {HEADER} was used with a different request body; use a new key for a new task"
IN_PROGRESS_MESSAGE = (
    f"A request with this {HEADER} is still being handled; retry in a moment to get its task."
)
# Records of this function are named by this prefix, not by the Lambda function's name, so that
# renaming or redeploying the function keeps the keys clients already used.
KEY_PREFIX = "tasks-api#create"


def idempotency_key(headers: Mapping[str, str] | None, multi: Mapping[str, list[str]] | None) -> str | None:
    """The request's key, None without the header; InvalidRequest for a malformed key or two keys."""
    values = [v for name, vs in (multi or {}).items() if name.lower() == HEADER.lower() for v in vs or []]
    if not values:
        values = [v for name, v in (headers or {}).items() if name.lower() == HEADER.lower()]
    if not values:
        return None
    if len(set(values)) > 1:
        raise InvalidRequest(f"Send one {HEADER} header, not {len(set(values))} different ones.")
    key = values[0]
    if not _KEY.fullmatch(key):
        raise InvalidRequest(KEY_MESSAGE)
    return key


@lru_cache(maxsize=1)
def idempotency_config() -> IdempotencyConfig:
    return IdempotencyConfig(
        event_key_jmespath="[project, key]",
        payload_validation_jmespath="body",
        expires_after_seconds=IDEMPOTENCY_SECONDS,
        raise_on_no_idempotency_key=True,
    )


@lru_cache(maxsize=1)
def persistence() -> DynamoDBPersistenceLayer:
    """Built lazily: no AWS client at import time."""
    return DynamoDBPersistenceLayer(table_name=settings().idempotency_table)


def create_once(
    project: str,
    key: str,
    body: dict[str, Any],
    create: Callable[[], Task],
    read: Callable[[str], Task | None],
) -> tuple[Task, bool]:
    """The task `create` makes (and False), or, for a key the project already used with the same
    body, the task that request made (as it is now; as it was made if it has expired since) and True."""
    made: list[Task] = []

    def create_task(request: dict[str, Any]) -> dict[str, Any]:
        task = create()
        made.append(task)
        return {"task_id": task.id, "task": task.model_dump(mode="json")}

    guarded = idempotent_function(
        data_keyword_argument="request",
        persistence_store=persistence(),
        config=idempotency_config(),
        key_prefix=KEY_PREFIX,
    )(create_task)
    try:
        recorded: dict[str, Any] = guarded(request={"project": project, "key": key, "body": body})
    except IdempotencyValidationError:
        raise IdempotencyKeyReused(REUSED_MESSAGE) from None
    except IdempotencyAlreadyInProgressError:
        raise RequestInProgress(IN_PROGRESS_MESSAGE) from None
    if made:
        return made[0], False
    return read(recorded["task_id"]) or Task.model_validate(recorded["task"]), True
