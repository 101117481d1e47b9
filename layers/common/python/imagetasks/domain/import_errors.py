"""Errors of the import data path, each carrying the message the task's owner will read.

Two families, kept apart on purpose so that a broad ``except ImportRejected`` can never swallow
something the workflow should retry:

- ``ImportRejected``: final. The task ends in ``failure`` with ``error.message``.
- ``TransientImportError``: worth retrying (throttling, timeouts, 5xx). Step Functions retries by
  error *name* (the Lambda's exception class name), so the retryable names are exactly
  ``TransientSourceError`` and ``TransientStorageError``; when retries run out the task still fails
  with ``error.message``.
"""

from __future__ import annotations


class ImportRejected(Exception):
    """The import cannot succeed as asked; ``message`` says why in words the user can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImportLocation(ImportRejected):
    """``import_from`` is empty, local, uses a refused scheme, or does not pass the import filter."""


class ImageRejected(ImportRejected):
    """The image data failed one of the deployment's checks (format, safety, size, checksum)."""


class DiskFormatNotAllowed(ImageRejected):
    """The declared disk or container format is not offered by this deployment."""


class ImageTooLarge(ImageRejected):
    """The image (or its virtual disk) is over the deployment's size limit."""


class CompressedSourceInvalid(ImageRejected):
    """A compressed source (gzip, xz, bzip2, zstd) is truncated, corrupt, or needs too much memory."""


class ChecksumMismatch(ImageRejected):
    """The data does not match the checksum the user gave in the task input."""


class SourceUnavailable(ImportRejected):
    """The image source answered, but not with the image (404, 403, unknown host, ...)."""


class SourceTooSlow(ImportRejected):
    """The source sent less than the deployment's minimum transfer rate over a whole window."""


class SourceChanged(SourceUnavailable):
    """An uploaded object was replaced (uploaded again) after its import task began."""


class StagingError(ImportRejected):
    """Storing the staged image failed for a reason retrying will not fix (e.g. access denied)."""


class TransientImportError(Exception):
    """A failure that may well go away if the step is retried later."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientSourceError(TransientImportError):
    """The image source timed out, broke off, refused the connection or answered 5xx/429."""


class TransientStorageError(TransientImportError):
    """S3 throttled the staging upload or answered 5xx."""
