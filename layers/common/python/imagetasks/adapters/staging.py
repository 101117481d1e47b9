"""Stage a stream of image data into S3 with a multipart upload, hashing it in the same pass.

One read of the data does everything: md5 and sha512 (``checksum`` and ``os_hash_value``), the
observers (the image checks) and the upload. Memory stays bounded whatever the image size: one
part being filled plus at most ``max_parts_in_flight`` parts uploading.

md5 runs in a helper thread while the calling thread does sha512 and the observers: hashlib
releases the GIL on large buffers, so the two digests cost about as much as sha512 alone.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ReadTimeoutError
from pydantic import BaseModel, ConfigDict

from imagetasks.domain.import_errors import StagingError, TransientStorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
#: S3's minimum for every part but the last is 5 MiB; 64 MiB keeps a 5 TB object under 10 000 parts.
DEFAULT_PART_SIZE = 64 * MiB
# Every image and export object is stored with this type (what Glance serves image data as).
IMAGE_CONTENT_TYPE = "application/octet-stream"

TRANSIENT_S3_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)


class StreamDigests(BaseModel):
    model_config = ConfigDict(frozen=True)

    size: int
    md5: str
    sha512: str


class StagedObject(BaseModel):
    """The staged copy of an image in S3, with the digests computed while writing it."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    size: int
    md5: str
    sha512: str


class ChunkObserver(Protocol):
    """Anything that wants to see every chunk in order (the image checks)."""

    def feed(self, chunk: bytes) -> None: ...


#: A part as the pieces of the chunks it is made of; joined only by a sink that needs one buffer.
PartPieces = Sequence[bytes | memoryview]


class PartSink(Protocol):
    """Where the parts go. ``put_part`` is called from worker threads, in any order."""

    def start(self) -> None: ...

    def put_part(self, number: int, pieces: PartPieces) -> None: ...

    def complete(self) -> None: ...

    def abort(self) -> None: ...


class NullSink:
    """Discards the data: hashing and inspection only (the benchmark, dry runs)."""

    def start(self) -> None:
        pass

    def put_part(self, number: int, pieces: PartPieces) -> None:
        pass

    def complete(self) -> None:
        pass

    def abort(self) -> None:
        pass


def translate_client_error(error: Exception, *, bucket: str, key: str) -> Exception:
    """The one place S3 errors of the staging upload become import errors.

    Throttling, timeouts and 5xx are transient (the workflow retries the step); anything else
    (access denied, no such bucket) is a deployment problem retrying will not fix.
    """
    where = f"s3://{bucket}/{key}"
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", "Unknown"))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in TRANSIENT_S3_CODES or status >= 500 or status == 429:
            return TransientStorageError(f"Storing the image at {where} failed temporarily ({code})")
        return StagingError(f"The image could not be stored at {where} ({code})")
    if isinstance(error, ConnectionError | ReadTimeoutError):
        return TransientStorageError(f"Storing the image at {where} failed temporarily ({error})")
    if isinstance(error, BotoCoreError):
        return StagingError(f"The image could not be stored at {where} ({type(error).__name__})")
    return error


class S3MultipartSink:
    """Writes parts to an S3 multipart upload; nothing is visible until ``complete``."""

    def __init__(self, client: S3Client, bucket: str, key: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._upload_id: str | None = None
        self._etags: dict[int, str] = {}

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self._bucket, Key=self._key, **kwargs)
        except (ClientError, BotoCoreError) as err:
            raise translate_client_error(err, bucket=self._bucket, key=self._key) from err

    def start(self) -> None:
        # Glance clients stream a download only when it says application/octet-stream; S3's
        # default (binary/octet-stream) makes python-glanceclient parse the image as JSON.
        response = self._call(self._client.create_multipart_upload, ContentType=IMAGE_CONTENT_TYPE)
        self._upload_id = str(response["UploadId"])

    def put_part(self, number: int, pieces: PartPieces) -> None:
        # Joining here, in the upload thread, keeps the one copy per byte off the hashing path.
        data = b"".join(pieces)
        response = self._call(
            self._client.upload_part, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._etags[number] = str(response["ETag"])

    def complete(self) -> None:
        parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
        self._call(
            self._client.complete_multipart_upload, UploadId=self._upload_id, MultipartUpload={"Parts": parts}
        )

    def abort(self) -> None:
        if self._upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
        except (ClientError, BotoCoreError):
            # The bucket's AbortIncompleteMultipartUpload lifecycle rule is the backstop; the
            # original error matters more to the user than this one.
            logger.warning(
                "could not abort multipart upload %s of s3://%s/%s", self._upload_id, self._bucket, self._key
            )


def hash_to_sink(
    chunks: Iterable[bytes],
    sink: PartSink,
    *,
    part_size: int = DEFAULT_PART_SIZE,
    observers: Sequence[ChunkObserver] = (),
    before_complete: Callable[[StreamDigests], None] | None = None,
    max_parts_in_flight: int = 2,
) -> StreamDigests:
    """Stream ``chunks`` into ``sink`` in parts of ``part_size``, hashing and observing each chunk.

    ``before_complete`` sees the digests after the last part is stored and before the sink is
    completed: raising there (a failed check) aborts the upload, so a refused image never becomes
    an object. On any error the sink is aborted and the error re-raised.
    """
    md5 = hashlib.md5(usedforsecurity=False)
    sha512 = hashlib.sha512()
    size = 0
    # The current part as views of the chunks: no copy until a sink needs one buffer.
    pending: list[memoryview] = []
    pending_size = 0
    part_number = 0
    in_flight: deque[Future[None]] = deque()
    # One thread hashes md5 while this one does sha512; the others upload parts.
    with ThreadPoolExecutor(max_workers=1 + max_parts_in_flight, thread_name_prefix="stage") as pool:

        def ship(pieces: PartPieces) -> None:
            nonlocal part_number
            part_number += 1
            while len(in_flight) >= max_parts_in_flight:
                in_flight.popleft().result()  # back-pressure: bounded memory
            in_flight.append(pool.submit(sink.put_part, part_number, pieces))

        try:
            sink.start()
            for chunk in chunks:
                if not chunk:
                    continue
                md5_done = pool.submit(md5.update, chunk)
                sha512.update(chunk)
                for observer in observers:
                    observer.feed(chunk)
                md5_done.result()
                size += len(chunk)
                pending.append(memoryview(chunk))
                pending_size += len(chunk)
                while pending_size >= part_size:
                    pieces, pending = _split_part(pending, part_size)
                    pending_size -= part_size
                    ship(pieces)
            if pending or part_number == 0:
                ship(pending)  # an empty image is one empty part
            pending = []
            while in_flight:
                in_flight.popleft().result()
            digests = StreamDigests(size=size, md5=md5.hexdigest(), sha512=sha512.hexdigest())
            if before_complete is not None:
                before_complete(digests)
            sink.complete()
            return digests
        except BaseException:
            for future in in_flight:
                future.cancel()
            for future in in_flight:
                if not future.cancelled():
                    future.exception()  # wait: never abort while a part is still being written
            sink.abort()
            raise


def _split_part(pending: list[memoryview], part_size: int) -> tuple[list[memoryview], list[memoryview]]:
    """Cut the first ``part_size`` bytes off ``pending`` (views only, no copying)."""
    part: list[memoryview] = []
    needed = part_size
    for index, piece in enumerate(pending):
        if len(piece) < needed:
            part.append(piece)
            needed -= len(piece)
            continue
        part.append(piece[:needed])
        rest = [piece[needed:]] if len(piece) > needed else []
        return part, rest + pending[index + 1 :]
    raise ValueError("not enough data for a part")


def stage_stream(
    chunks: Iterable[bytes],
    bucket: str,
    key: str,
    s3_client: S3Client | None = None,
    *,
    part_size: int = DEFAULT_PART_SIZE,
    observers: Sequence[ChunkObserver] = (),
    before_complete: Callable[[StreamDigests], None] | None = None,
    max_parts_in_flight: int = 2,
) -> StagedObject:
    """Stage ``chunks`` as ``s3://bucket/key``; see ``hash_to_sink``. Leaves no object on failure."""
    if s3_client is None:
        import boto3  # built lazily: nothing talks to AWS at import time

        s3_client = boto3.client("s3")
    sink = S3MultipartSink(s3_client, bucket, key)
    digests = hash_to_sink(
        chunks,
        sink,
        part_size=part_size,
        observers=observers,
        before_complete=before_complete,
        max_parts_in_flight=max_parts_in_flight,
    )
    return StagedObject(bucket=bucket, key=key, size=digests.size, md5=digests.md5, sha512=digests.sha512)
