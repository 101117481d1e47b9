"""The import data path in one call: vet the location, fetch, check, hash and stage the image.

This is what the workflow's import step calls. It either returns a ``FetchResult`` describing a
staged object whose bits passed every check the deployment switched on, or raises an
``ImportRejected`` (final, with the user's message) or a ``TransientImportError`` (retry), and then
no staged object exists: a refused image is aborted as a multipart upload, never completed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from imagetasks.adapters.http_source import HttpSource, HttpSourceSettings, S3Source, SourceStream
from imagetasks.adapters.staging import DEFAULT_PART_SIZE, ChunkObserver, StreamDigests, stage_stream
from imagetasks.domain.compression import DecompressedSource, DecompressionSettings
from imagetasks.domain.errors import TaskNotProcessing
from imagetasks.domain.image_checks import (
    ExpectedChecksums,
    ImageChecker,
    ImageCheckSettings,
    ImageVerdict,
    check_declared_formats,
)
from imagetasks.domain.import_errors import ChecksumMismatch
from imagetasks.domain.import_filter import (
    ImportFilter,
    ImportFilterSettings,
    ResolvedTarget,
    Resolver,
    S3Location,
)
from imagetasks.domain.progress import ProgressReporter
from imagetasks.domain.runners import RunnerLimits
from imagetasks.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


#: How often a running fetch asks whether its task is still wanted (cancelled, ended otherwise):
#: independent of the data, so a source that stalls or trickles is cut within this time.
WATCH_INTERVAL_SECONDS = 2.0


class SourceWatch:
    """Asks `still_wanted` every `interval` seconds, on its own thread, while a source is read; the
    first "no" cuts the source (`HttpSource.abort`), so a blocked read returns at once, even one
    still waiting for the source's answer. A failing
    question (DynamoDB busy) counts as "yes": the step's own conditional writes still decide."""

    def __init__(self, still_wanted: Callable[[], bool], interval: float = WATCH_INTERVAL_SECONDS) -> None:
        self._still_wanted = still_wanted
        self._interval = interval
        self._done = threading.Event()
        self.stopped = False

    @contextmanager
    def watching(self, cut: Callable[[], None]) -> Iterator[SourceWatch]:
        thread = threading.Thread(target=self._run, args=(cut,), name="source-watch", daemon=True)
        thread.start()
        try:
            yield self
        except Exception as error:
            if self.stopped:  # what the cut made the read raise: the real reason is the task's end
                raise TaskNotProcessing("The task ended while its source was read") from error
            raise
        finally:
            self._done.set()
            thread.join()
        self.require_wanted()

    def require_wanted(self) -> None:
        if self.stopped:
            raise TaskNotProcessing("The task ended while its source was read")

    def _run(self, cut: Callable[[], None]) -> None:
        while not self._done.wait(self._interval):
            try:
                wanted = self._still_wanted()
            except Exception:
                logger.warning("Could not ask whether the task still runs", exc_info=True)
                continue
            if not wanted:
                self.stopped = True
                cut()
                return


class ImportSettings(BaseModel):
    """Everything the deployment decides about imports, in one validated model."""

    model_config = ConfigDict(frozen=True)

    filter: ImportFilterSettings = Field(default_factory=ImportFilterSettings)
    checks: ImageCheckSettings = Field(default_factory=ImageCheckSettings)
    http: HttpSourceSettings = Field(default_factory=HttpSourceSettings)
    decompression: DecompressionSettings = Field(default_factory=DecompressionSettings)
    part_size: int = Field(default=DEFAULT_PART_SIZE, ge=5 * 1024 * 1024)
    #: The runner this fetch runs on: a source announcing more than Lambda transfers goes to the
    #: container runner before its body is read (None: no hand-off).
    runner: RunnerLimits | None = None


class FetchResult(BaseModel):
    """A staged image that passed the checks: what the image record needs."""

    model_config = ConfigDict(frozen=True)

    size: int
    checksum: str  # md5 hex
    os_hash_algo: str = "sha512"
    os_hash_value: str
    #: ``None`` when the deployment switched format inspection off.
    detected_format: str | None
    virtual_size: int | None
    staged_bucket: str
    staged_key: str
    #: An S3 source's ETag as read: the import of an upload removes the upload only while it is
    #: still this object.
    source_etag: str | None = None
    #: The source's compression (gzip, xz, bzip2, zstd) when it was decompressed; the other fields
    #: describe the decompressed image.
    compression: str | None = None
    compressed_size: int | None = None


def fetch_and_check(
    source_url: str,
    declared_disk_format: str,
    declared_container_format: str | None,
    expected_checksums: ExpectedChecksums | None,
    staging_bucket: str,
    staging_key: str,
    *,
    settings: ImportSettings | None = None,
    project_id: str | None = None,
    s3_client: S3Client | None = None,
    resolver: Resolver | None = None,
    source_etag: str | None = None,
    source_version_id: str | None = None,
    progress: ProgressReporter | None = None,
    watch: SourceWatch | None = None,
) -> FetchResult:
    """Fetch ``source_url`` into ``s3://staging_bucket/staging_key`` if it passes every check.

    ``project_id`` restricts ``s3://`` sources to the caller's own prefix; ``source_etag`` and
    ``source_version_id`` restrict them to that very object (``SourceChanged`` if it was replaced).
    ``watch`` cuts the source once the task is no longer wanted (TaskNotProcessing, nothing staged).
    """
    settings = settings or ImportSettings()
    check_declared_formats(declared_disk_format, declared_container_format, settings.checks)
    import_filter = ImportFilter(settings.filter, resolver=resolver)
    location = import_filter.check_location(source_url, project_id)
    checker = ImageChecker(
        settings.checks, declared_disk_format, declared_container_format, expected_checksums
    )
    verdicts: list[ImageVerdict] = []

    data: DecompressedSource | None = None

    def verify(digests: StreamDigests) -> None:
        # Runs after the last part is stored and before the upload is completed, so a refusal
        # aborts the upload and leaves nothing behind.
        if watch is not None:
            watch.require_wanted()  # a cut source may look complete (no length announced)
        if progress is not None:
            progress.finish()  # the last figures; refused (and the upload aborted) if the task ended
        try:
            verdicts.append(checker.finish(checksum=digests.md5, os_hash_value=digests.sha512))
        except ChecksumMismatch as mismatch:
            if data is None or data.compression is None:
                raise
            raise ChecksumMismatch(
                f"{mismatch.message} (the source is {data.compression}-compressed: checksums are "
                "compared with the decompressed image)"
            ) from mismatch

    opener = _opener(location, import_filter, settings, s3_client)
    with (
        (watch or SourceWatch(lambda: True, interval=3600)).watching(getattr(opener, "abort", _nothing)),
        _open(opener, location, source_etag, source_version_id) as source,
    ):
        checker.check_announced_size(source.content_length)
        if settings.runner is not None:
            settings.runner.transfer(source.content_length)  # NeedsContainer: nothing read yet
        # A compressed source is decompressed as it streams (unless the user says the image is
        # the compressed file itself): what is hashed, checked and staged is the image it holds.
        data = DecompressedSource(
            source,
            settings.decompression,
            max_output_bytes=settings.checks.max_image_size_bytes,
            keep_compressed=declared_container_format == "compressed",
        )
        observers: list[ChunkObserver] = [checker]
        if progress is not None:
            # Compressed, the source's length is not the image's: the total is unknown until the end.
            progress.bytes_total = lambda: None if data is None or data.compression else source.content_length
            progress.start()
            observers.append(progress)
        staged = stage_stream(
            data,
            staging_bucket,
            staging_key,
            s3_client,
            part_size=settings.part_size,
            observers=observers,
            before_complete=verify,
        )
    verdict = verdicts[0]
    return FetchResult(
        size=staged.size,
        checksum=staged.md5,
        os_hash_value=staged.sha512,
        detected_format=verdict.detected_format,
        virtual_size=verdict.virtual_size,
        staged_bucket=staged.bucket,
        staged_key=staged.key,
        source_etag=source.etag,
        compression=data.compression,
        compressed_size=data.compressed_bytes if data.compression else None,
    )


def _nothing() -> None:
    """An S3 source needs no cut: S3 does not stall (a crawl is refused by the rate guard)."""


def _opener(
    location: ResolvedTarget | S3Location,
    import_filter: ImportFilter,
    settings: ImportSettings,
    s3_client: S3Client | None,
) -> HttpSource | S3Source:
    if isinstance(location, S3Location):
        return S3Source(s3_client, chunk_size=settings.http.chunk_size, settings=settings.http)
    return HttpSource(import_filter, settings.http)


def _open(
    opener: HttpSource | S3Source,
    location: ResolvedTarget | S3Location,
    etag: str | None = None,
    version_id: str | None = None,
) -> SourceStream:
    if isinstance(location, S3Location):
        assert isinstance(opener, S3Source)
        return opener.open(location.bucket, location.key, etag=etag, version_id=version_id)
    assert isinstance(opener, HttpSource)
    # The vetted target goes in as is (one DNS answer per hop); HttpSource vets every redirect.
    return opener.open(location)
