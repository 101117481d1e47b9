"""Reading what S3 knows about an uploaded object (size and user metadata), with its error codes
translated in one place. Kept beside the trigger: it is the only reader of upload metadata."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from imagetasks.domain.import_errors import SourceUnavailable, TransientStorageError
from imagetasks.domain.uploads import UploadedObject, unquoted_etag

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)


def translate(error: ClientError, bucket: str, key: str) -> Exception:
    """Throttling and S3's own failures may pass (the event is retried); anything else (gone, denied)
    will not, and becomes a message for the upload's owner."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in TRANSIENT_CODES or status >= 500:
        return TransientStorageError(f"S3 is busy ({code or status}) reading s3://{bucket}/{key}")
    if code in ("404", "NoSuchKey", "NotFound"):
        return SourceUnavailable(f"The upload s3://{bucket}/{key} no longer exists")
    return SourceUnavailable(f"The upload s3://{bucket}/{key} could not be read ({code or status})")


class UploadedObjects:
    def __init__(self, client: S3Client | None = None) -> None:
        self._client = client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = boto3.client("s3")
        return self._client

    def head(self, bucket: str, key: str, version_id: str | None = None) -> UploadedObject:
        """The object as it is now (or the version the event names, in a bucket that keeps
        versions), with the ETag that tells it apart from a later upload of the same key."""
        try:
            if version_id:
                response = self.client.head_object(Bucket=bucket, Key=key, VersionId=version_id)
            else:
                response = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise translate(error, bucket, key) from error
        return UploadedObject(
            bucket=bucket,
            key=key,
            size=int(response.get("ContentLength", 0)),
            metadata=dict(response.get("Metadata") or {}),
            etag=unquoted_etag(response.get("ETag")),
            # "null" is the version of every object in a bucket that never kept versions.
            version_id=None if response.get("VersionId") in (None, "", "null") else response.get("VersionId"),
        )
