"""An object created under uploads/<project_id>/ in the uploads bucket becomes that project's import task.

S3 delivers each event at least once. Two guards keep a repeated delivery (or a retried invocation)
to one task: a Powertools idempotency record per uploaded object, and a task id derived from the
same identity, which the tasks table refuses to create twice. The identity is the object's, not the
delivery's: bucket, key, version, ETag and S3's sequencer (a repeated delivery carries the same
ones; a new upload of the key has a new sequencer). Records are handled one by one; a record that
fails for a passing reason is retried by failing the invocation after the others are done (their
idempotency records make the retry skip them).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, ValidationError
from uploaded_objects import UploadedObjects

from imagetasks import composition
from imagetasks.config import settings
from imagetasks.domain.conversion import GiB
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.import_errors import SourceUnavailable
from imagetasks.domain.tasks import TaskType
from imagetasks.domain.uploads import (
    NotAnUpload,
    parse_upload_key,
    plan_import,
    plan_unreadable,
    unquoted_etag,
    upload_task_id,
)
from imagetasks.entrypoints.steps import error_code_of
from imagetasks.observability import logger, tracer
from imagetasks.services.tasks import TaskService

# Longer than S3's and Lambda's redelivery window (asynchronous retries end after 6 hours).
IDEMPOTENCY_SECONDS = 24 * 3600


class UploadEvent(BaseModel):
    """One S3 ObjectCreated record, key decoded, naming one uploaded object: its version and ETag,
    and S3's sequencer (the same in every delivery of the event, new with every upload of the key).
    Never the event time: S3 may send one upload twice with two times (and moto sends two events,
    ObjectCreated:Put and :CompleteMultipartUpload, for one multipart upload)."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    sequencer: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> UploadEvent:
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        etag = unquoted_etag(obj.get("eTag")) if isinstance(obj.get("eTag"), str) else None
        sequencer = obj.get("sequencer") or None
        if etag is None and sequencer is None:
            # Not an S3 record as S3 writes them (both are always there): the time at least keeps
            # two uploads of the key apart.
            sequencer = record.get("eventTime") or None
        raw_key = obj.get("key")
        return cls.model_validate(
            {
                "bucket": bucket,
                # S3 URL-encodes keys in events the quote_plus way ("a b.qcow2" arrives as "a+b.qcow2").
                "key": unquote_plus(raw_key) if isinstance(raw_key, str) else raw_key,
                "version_id": obj.get("versionId") or None,
                "etag": etag,
                "sequencer": sequencer,
            }
        )

    @property
    def task_id(self) -> str:
        return upload_task_id(self.bucket, self.key, self.version_id, self.etag, self.sequencer)


class Outcome(BaseModel):
    outcome: Literal["created", "failed", "ignored"]
    key: str
    task_id: str | None = None
    reason: str | None = None


class RecordsNotImported(Exception):
    """Some records failed for a reason that may pass; failing the invocation makes Lambda retry."""


@lru_cache(maxsize=1)
def task_service() -> TaskService:
    return composition.task_service(settings())


@lru_cache(maxsize=1)
def uploaded_objects() -> UploadedObjects:
    return UploadedObjects()


@lru_cache(maxsize=1)
def idempotency_config() -> IdempotencyConfig:
    return IdempotencyConfig(
        event_key_jmespath="[bucket, key, version_id, etag, sequencer]",
        expires_after_seconds=IDEMPOTENCY_SECONDS,
        raise_on_no_idempotency_key=True,
    )


@lru_cache(maxsize=1)
def import_once() -> Callable[..., dict[str, Any]]:
    """`import_upload` behind its idempotency record (built lazily: no AWS client at import time)."""
    persistence = DynamoDBPersistenceLayer(table_name=settings().idempotency_table)
    guarded: Callable[..., dict[str, Any]] = idempotent_function(
        data_keyword_argument="upload", persistence_store=persistence, config=idempotency_config()
    )(import_upload)
    return guarded


def import_upload(upload: dict[str, Any]) -> dict[str, Any]:
    """Create the import task of one uploaded object (or the failed task saying why it cannot be)."""
    event = UploadEvent.model_validate(upload)
    try:
        where = parse_upload_key(event.key)
    except NotAnUpload as refused:
        logger.warning(
            "Upload ignored: no task for a key without an owner",
            extra={"bucket": event.bucket, "key": event.key, "reason": refused.message},
        )
        return Outcome(outcome="ignored", key=event.key, reason=refused.message).model_dump()
    try:
        uploaded = uploaded_objects().head(event.bucket, event.key, event.version_id)
    except SourceUnavailable as unreadable:
        plan = plan_unreadable(event.bucket, event.key, where, str(unreadable))
    else:
        if event.etag and uploaded.etag and uploaded.etag != event.etag:
            # The key was uploaded again before this event was handled: this event's object is
            # gone, and the one there now has an event (and a task) of its own.
            reason = "the object was replaced by a newer upload, which has its own event"
            logger.info(
                "Upload ignored: replaced before its task was created",
                extra={"key": event.key, "event_etag": event.etag, "etag": uploaded.etag},
            )
            return Outcome(outcome="ignored", key=event.key, reason=reason).model_dump()
        plan = plan_import(uploaded, where, int(settings().max_image_size_gib * GiB))
    if plan.ignored_metadata:
        logger.warning(
            "Upload metadata that reads like ownership was ignored; the owner is the key's project",
            extra={"key": event.key, "owner": plan.owner, "ignored": list(plan.ignored_metadata)},
        )
    if plan.refusal is None:
        try:
            task = task_service().create(TaskType.IMPORT, plan.task_input, plan.owner, task_id=event.task_id)
        except InvalidRequest as invalid:
            plan = plan.model_copy(
                update={"refusal": invalid.message, "refusal_code": error_code_of(invalid)}
            )
        else:
            logger.info(
                "Import task created", extra={"key": event.key, "task_id": task.id, "owner": task.owner}
            )
            return Outcome(outcome="created", key=event.key, task_id=task.id).model_dump()
    assert plan.refusal is not None
    task_service().create_failed(
        TaskType.IMPORT,
        plan.task_input,
        plan.owner,
        plan.refusal,
        task_id=event.task_id,
        code=plan.refusal_code,
    )
    logger.warning(
        "Upload refused; its task failed",
        extra={"key": event.key, "task_id": event.task_id, "owner": plan.owner, "reason": plan.refusal},
    )
    return Outcome(outcome="failed", key=event.key, task_id=event.task_id, reason=plan.refusal).model_dump()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency_config().register_lambda_context(context)
    outcomes: list[dict[str, Any]] = []
    retry: list[str] = []
    for record in event.get("Records") or []:
        try:
            upload = UploadEvent.from_record(record)
        except ValidationError:
            logger.warning("Not an S3 object event record; ignored", extra={"record": record})
            continue
        try:
            outcomes.append(import_once()(upload=upload.model_dump()))
        except Exception:
            # S3 would drop the error silently: say it here, then go on with the other records.
            logger.exception("Upload not handled; the invocation will be retried", extra={"key": upload.key})
            retry.append(upload.key)
    if retry:
        raise RecordsNotImported(f"{len(retry)} upload(s) not handled yet: {', '.join(retry)}")
    return {"outcomes": outcomes}
