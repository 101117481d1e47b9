"""Moving, copying and removing image objects in S3 (the bits, never the records)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from imagetasks.adapters.staging import IMAGE_CONTENT_TYPE
from imagetasks.config import settings
from imagetasks.domain.import_errors import StagingError, TransientStorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "503",
    }
)


# Answers of a conditional delete that leave the object as it is (see delete_if_unchanged).
KEPT_BY_CONDITION = frozenset(
    {"PreconditionFailed", "412", "NoSuchKey", "404", "ConditionalRequestConflict", "409"}
)


COPY_TRANSFER = TransferConfig(multipart_threshold=4 * 1024**3, multipart_chunksize=512 * 1024**2)
# A copy takes the image's content type, whatever the source object says (an upload's own type, or
# none: S3 then serves binary/octet-stream, which python-glanceclient does not stream). One CopyObject
# needs REPLACE for that; the multipart copy above 4 GiB takes ContentType on its own.
COPY_ARGS = {"ContentType": IMAGE_CONTENT_TYPE, "MetadataDirective": "REPLACE"}


def translate(error: ClientError, where: str) -> Exception:
    """The one place where S3 error codes of object moves become domain errors."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    if code in TRANSIENT_CODES:
        return TransientStorageError(f"The image store is busy ({code}) while handling {where}")
    return StagingError(f"The image store refused an operation on {where} ({code})")


class S3Objects:
    def __init__(self, client: S3Client | None = None, presign_client: S3Client | None = None) -> None:
        self._client = client
        self._presign_client = presign_client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            # SigV4 for presigned URLs: boto3 still signs with SigV2 by default in us-east-1.
            self._client = boto3.client("s3", config=Config(signature_version="s3v4"))
        return self._client

    def copy(self, source_bucket: str, source_key: str, bucket: str, key: str) -> None:
        """Server-side copy: one CopyObject request up to 4 GiB, 512 MiB UploadPartCopy parts
        above (S3's single-copy limit is 5 GiB). boto3's default, 8 MiB parts, would make a
        10 GiB image cost 1,280 requests instead of 20."""
        try:
            self.client.copy(
                {"Bucket": source_bucket, "Key": source_key},
                bucket,
                key,
                ExtraArgs=COPY_ARGS,
                Config=COPY_TRANSFER,
            )
        except ClientError as error:
            raise translate(error, f"s3://{bucket}/{key}") from error

    def delete(self, bucket: str, key: str) -> None:
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise translate(error, f"s3://{bucket}/{key}") from error

    def delete_if_unchanged(self, bucket: str, key: str, etag: str) -> bool:
        """Delete the object only while its ETag is `etag` (S3's conditional delete, If-Match).
        False when it is another object now, or none: a key uploaded again keeps its new data."""
        try:
            self.client.delete_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"')
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            # 412: another object; 404: none; 409: a write to the key raced with this delete.
            if code in KEPT_BY_CONDITION:
                return False
            raise translate(error, f"s3://{bucket}/{key}") from error
        return True

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under `prefix` (and abort unfinished multipart uploads there)."""
        deleted = 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys})  # type: ignore[typeddict-item]
                    deleted += len(keys)
            uploads = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
            for upload in uploads:
                self.client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        except ClientError as error:
            raise translate(error, f"s3://{bucket}/{prefix}") from error
        return deleted

    @property
    def presign_client(self) -> S3Client:
        """The client that signs download URLs: the API client, unless the deployment names another
        endpoint for the URLs it hands out (the local stack: moto's server, reachable by the user)."""
        if self._presign_client is None:
            endpoint = settings().presign_endpoint_url
            if not endpoint:
                self._presign_client = self.client
            else:
                self._presign_client = boto3.client(
                    "s3",
                    endpoint_url=endpoint,
                    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
                )
        return self._presign_client

    def presigned_get(self, bucket: str, key: str, seconds: int) -> str:
        """A time-limited GET URL whose answer says application/octet-stream, as Glance's does
        (objects stored before their type was set included)."""
        return self.presign_client.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket, "Key": key, "ResponseContentType": IMAGE_CONTENT_TYPE},
            ExpiresIn=seconds,
        )
