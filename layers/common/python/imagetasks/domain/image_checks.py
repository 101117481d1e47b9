"""Checks on image data as it streams past: format, safety, size and checksum.

``ImageChecker`` is fed every chunk exactly once, in order, in the same pass that hashes and stages
the data, so the image is never read twice. It raises ``ImageRejected`` (or a subclass) as early
as the problem is known: the size limit the moment it is passed, a format mismatch or an oversized
virtual disk as soon as the headers are read, the rest at ``finish``.

Format rules follow Glance (``[image_format]/require_image_format_match``): the detected format
must equal ``disk_format``, except that content no inspector recognises (and partitioned raw disks,
detected as ``gpt``) is accepted for ``raw`` and for disk formats oslo.utils cannot inspect (``ami``,
``ploop``, ...). Content that is unrecognised but declared as an inspectable format is refused:
if it were that format, we would have recognised it.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from oslo_utils.imageutils import format_inspector as fi
from pydantic import BaseModel, ConfigDict, field_validator

from imagetasks.domain.disk_headers import HEAD_BYTES, header_problems, qemu_probe
from imagetasks.domain.import_errors import (
    ChecksumMismatch,
    DiskFormatNotAllowed,
    ImageRejected,
    ImageTooLarge,
)

GiB = 1024**3

# Glance's default [image_format] lists.
GLANCE_DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
GLANCE_CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")

#: Formats an inspector can recognise. ``raw`` is what everything else falls back to.
INSPECTABLE_FORMATS = frozenset(fi.ALL_FORMATS) - {"raw"}
#: Detected formats that are "a plain disk" and so acceptable where raw is.
RAW_CONTENT = frozenset({"raw", "gpt"})


EMPTY_IMAGE = "The image is empty (0 bytes): there is no disk image to import"

INSPECT_PIECE = 64 * 1024
SMALL_PIECES_UNTIL = 64 * 1024 * 1024


class ImageCheckSettings(BaseModel):
    """The deployment's checks on imported data; each can be switched off on its own."""

    model_config = ConfigDict(frozen=True)

    #: Detect the format with oslo.utils' format_inspector (needed by the next three).
    inspect_format: bool = True
    #: Refuse data whose detected format differs from ``disk_format`` (Glance's rule above).
    require_format_match: bool = True
    #: Run the detected format's safety checks (qcow2 backing/data file, VMDK descriptor, ...).
    safety_checks: bool = True
    #: Glance's ``gpt_safety_checks_nonfatal``: many real raw disks have sloppy protective MBRs.
    gpt_safety_checks_nonfatal: bool = False
    #: Limit on the bytes imported; ``None`` for no limit. Glance's ``image_size_cap`` is 1 TiB.
    max_image_size_bytes: int | None = 1024 * GiB
    #: Limit on the virtual disk size the headers announce; ``None`` for no limit.
    max_virtual_size_bytes: int | None = None
    #: Empty tuple means "any".
    allowed_disk_formats: tuple[str, ...] = GLANCE_DISK_FORMATS
    allowed_container_formats: tuple[str, ...] = GLANCE_CONTAINER_FORMATS
    #: Compare with ``checksum`` / ``os_hash_value`` when the task input gives them.
    verify_expected_checksums: bool = True


class ExpectedChecksums(BaseModel):
    """Checksums the user put in the task input, if any."""

    model_config = ConfigDict(frozen=True)

    checksum: str | None = None  # md5, hex
    os_hash_value: str | None = None  # sha512, hex

    @field_validator("checksum", "os_hash_value")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.strip().lower()
        if not re.fullmatch(r"[0-9a-f]+", value):
            raise ValueError("must be a hexadecimal digest")
        return value


class ImageVerdict(BaseModel):
    """What the checks learnt about data that passed them."""

    model_config = ConfigDict(frozen=True)

    size: int
    #: ``None`` when format inspection is switched off.
    detected_format: str | None
    #: ``None`` when unknown (inspection off, or a format whose header does not say).
    virtual_size: int | None


def check_declared_formats(
    disk_format: str | None, container_format: str | None, settings: ImageCheckSettings
) -> None:
    """Refuse disk/container formats the deployment does not offer. Needs no data, so the API can
    call it at task creation and answer 400 instead of failing the task later."""
    if settings.allowed_disk_formats and disk_format not in settings.allowed_disk_formats:
        raise DiskFormatNotAllowed(
            f"disk_format {disk_format!r} is not allowed; this cloud accepts "
            f"{', '.join(settings.allowed_disk_formats)}"
        )
    # None means "not declared": whether that is acceptable is the task input's rule, not ours.
    allowed_containers = settings.allowed_container_formats
    if container_format is not None and allowed_containers and container_format not in allowed_containers:
        raise DiskFormatNotAllowed(
            f"container_format {container_format!r} is not allowed; this cloud accepts "
            f"{', '.join(settings.allowed_container_formats)}"
        )


def format_matches(declared: str, detected: str) -> bool:
    """Glance's acceptance rule for a declared ``disk_format`` and the detected one."""
    if declared == detected:
        return True
    return detected in RAW_CONTENT and declared not in INSPECTABLE_FORMATS


class _ChunkFeeder:
    """The file-like source InspectWrapper reads from: ``read`` hands over the chunk being fed.

    InspectWrapper pulls from a stream; our pipeline pushes chunks. This adapter lets us use its
    public ``read`` so that detection stays exactly oslo.utils' (raw fallback, multiple-match
    refusal) instead of a re-implementation of it.
    """

    def __init__(self) -> None:
        self.pending = b""

    def read(self, size: int = -1) -> bytes:
        chunk, self.pending = self.pending, b""
        return chunk

    def close(self) -> None:
        self.pending = b""


class ImageChecker:
    """Checks one image's data, fed chunk by chunk; ``finish`` gives the verdict or raises."""

    def __init__(
        self,
        settings: ImageCheckSettings,
        disk_format: str,
        container_format: str | None = None,
        expected: ExpectedChecksums | None = None,
    ) -> None:
        check_declared_formats(disk_format, container_format, settings)
        self._settings = settings
        self._disk_format = disk_format
        self._expected = expected or ExpectedChecksums()
        self._size = 0
        #: The first bytes of the image, for the header checks of ``disk_headers`` (qemu's view).
        self._head = bytearray()
        self._finished = False
        self._feeder = _ChunkFeeder()
        self._wrapper: fi.InspectWrapper | None = None
        # A separate inspector for the declared format, only to explain a mismatch precisely
        # ("truncated qcow2 header" rather than "this is raw"); the wrapper hides its own.
        self._declared: fi.FileInspector | None = None
        self._declared_error: str | None = None
        self._detected: fi.FileInspector | None = None
        if settings.inspect_format:
            self._wrapper = fi.InspectWrapper(self._feeder)  # type: ignore[arg-type]  # duck-typed source
            inspector_class = fi.get_inspector(disk_format)
            if disk_format in INSPECTABLE_FORMATS and inspector_class is not None:
                self._declared = inspector_class()

    @property
    def size(self) -> int:
        return self._size

    def feed(self, chunk: bytes) -> None:
        """Inspect the next chunk of the image; raise as soon as a problem is certain."""
        if not chunk:
            return
        self._size += len(chunk)
        limit = self._settings.max_image_size_bytes
        if limit is not None and self._size > limit:
            raise ImageTooLarge(
                f"The image is larger than this cloud's limit of {_human(limit)}: "
                f"{self._size} bytes read so far"
            )
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        if self._wrapper is None:
            return
        # Near the start of the image the inspectors are handed small pieces, as Glance reads
        # them: some (VHDX) only find their header regions when data arrives in pieces this size.
        offset = self._size - len(chunk)
        step = INSPECT_PIECE if offset < SMALL_PIECES_UNTIL else len(chunk)
        view = memoryview(chunk)
        for start in range(0, len(chunk), step):
            piece = view[start : start + step]
            self._feeder.pending = bytes(piece)
            self._wrapper.read(len(piece))
        self._feed_declared(chunk)
        if self._detected is None:
            # Decide early where possible, so a lie about the format or a huge virtual disk stops
            # the download after a few KiB rather than after the whole image.
            detected = self._decided_format()
            if detected is not None:
                self._detected = detected
                self._check_detected(detected, at_end=False)

    def check_announced_size(self, content_length: int | None) -> None:
        """Refuse before reading when the source announces a size over the limit."""
        limit = self._settings.max_image_size_bytes
        if content_length is not None and limit is not None and content_length > limit:
            raise ImageTooLarge(
                f"The image is larger than this cloud's limit of {_human(limit)}: "
                f"the source announces {content_length} bytes"
            )

    def finish(self, *, checksum: str, os_hash_value: str) -> ImageVerdict:
        """Conclude after the last chunk, given the md5 and sha512 hex digests of all the data."""
        if self._finished:
            raise RuntimeError("ImageChecker.finish called twice")
        self._finished = True
        if self._size == 0:
            # Nothing to inspect; said here so that every way in (URL, s3://, upload) says the same.
            raise ImageRejected(EMPTY_IMAGE)
        detected_format: str | None = None
        virtual_size: int | None = None
        if self._wrapper is not None:
            self._wrapper.close()
            if self._declared is not None and self._declared_error is None:
                self._declared.finish()
            detected = self._decided_format()
            if detected is None:  # cannot happen once the wrapper is closed; be safe anyway
                raise ImageRejected("The image data's format could not be determined")
            self._detected = detected
            self._check_detected(detected, at_end=True)
            self._check_qemu_agrees(detected)
            if self._settings.safety_checks:
                self._safety_check(detected)
            detected_format = detected.NAME
            virtual_size = self._virtual_size(detected)
        self._check_checksums(checksum=checksum, os_hash_value=os_hash_value)
        return ImageVerdict(size=self._size, detected_format=detected_format, virtual_size=virtual_size)

    # -- format -----------------------------------------------------------------------------

    def _feed_declared(self, chunk: bytes) -> None:
        if self._declared is None or self._declared_error is not None:
            return
        try:
            self._declared.eat_chunk(chunk)
        except Exception as err:  # any parse failure means "not a valid <declared>"; keep the reason
            self._declared_error = str(err) or type(err).__name__

    def _decided_format(self) -> fi.FileInspector | None:
        assert self._wrapper is not None
        try:
            formats = self._wrapper.formats
        except fi.ImageFormatError as err:
            raise ImageRejected(f"The image data's format could not be determined: {err}") from err
        if formats is None:
            return None
        names = {f.NAME for f in formats}
        if len(formats) > 1:
            # A bootable ISO legitimately carries an MBR/GPT as well (Glance accepts it as iso).
            if names == {"iso", "gpt"}:
                return next(f for f in formats if f.NAME == "iso")
            raise ImageRejected(
                "Image data matches several disk formats at once "
                f"({', '.join(sorted(names))}), which is not allowed"
            )
        return formats[0]

    def _check_detected(self, detected: fi.FileInspector, *, at_end: bool) -> None:
        name = detected.NAME
        if self._settings.require_format_match and not format_matches(self._disk_format, name):
            raise ImageRejected(self._mismatch_message(name, at_end=at_end))
        limit = self._settings.max_virtual_size_bytes
        virtual_size = self._virtual_size(detected) if at_end or name not in RAW_CONTENT else None
        if limit is not None and virtual_size is not None and virtual_size > limit:
            raise ImageTooLarge(
                f"The image's virtual disk size ({virtual_size} bytes) is over this cloud's limit "
                f"of {_human(limit)}"
            )

    def _check_qemu_agrees(self, detected: fi.FileInspector) -> None:
        """Data the inspectors take for a plain disk (raw, or too short for their checks) that
        qemu-img would probe as another format is refused: a consumer that lets qemu probe would
        open it as that format, backing file included."""
        if detected.NAME not in RAW_CONTENT:
            return
        if not (self._settings.require_format_match or self._settings.safety_checks):
            return
        probed = qemu_probe(bytes(self._head))
        if probed is not None:
            raise ImageRejected(
                f"Image data is {probed} to qemu-img ({self._size} bytes, too short or malformed for "
                f"this cloud's {probed} checks) but disk_format says {self._disk_format}"
            )

    def _mismatch_message(self, detected: str, *, at_end: bool) -> str:
        declared = self._disk_format
        if detected in RAW_CONTENT and self._declared is not None:
            if self._declared_error is not None:
                return f"Image data is not valid {declared}: its header is corrupt ({self._declared_error})"
            if at_end and not self._declared.complete:
                return (
                    f"Image data ends after {self._size} bytes, before the end of its {declared} header: "
                    "the file is truncated or is not a disk image"
                )
        shown = "raw (no known disk format)" if detected == "raw" else detected
        return f"Image data is {shown} but disk_format says {declared}"

    def _virtual_size(self, detected: fi.FileInspector) -> int | None:
        if detected.NAME in RAW_CONTENT:
            return self._size
        try:
            size = int(detected.virtual_size)
        except Exception:  # e.g. a text-only VMDK descriptor has no header to read it from
            return None
        return size or None  # the inspectors say 0 when the header does not tell

    # -- safety -----------------------------------------------------------------------------

    def _safety_check(self, detected: fi.FileInspector) -> None:
        try:
            detected.safety_check()
        except fi.SafetyCheckFailed as failed:
            if detected.NAME == "gpt" and self._settings.gpt_safety_checks_nonfatal:
                return
            raise ImageRejected(_safety_message(detected, failed.failures)) from failed
        except fi.ImageFormatError as err:
            raise ImageRejected(
                f"Image data is not valid {detected.NAME}: it could not be safety checked ({err})"
            ) from err
        # What oslo.utils does not check, read as qemu-img reads it (see disk_headers).
        problems = header_problems(detected.NAME, bytes(self._head), self._size)
        if problems:
            raise ImageRejected(f"Image data is {detected.NAME} and is not allowed: {'; '.join(problems)}")

    # -- checksums --------------------------------------------------------------------------

    def _check_checksums(self, *, checksum: str, os_hash_value: str) -> None:
        if not self._settings.verify_expected_checksums:
            return
        pairs = (("os_hash_value", self._expected.os_hash_value, os_hash_value),
                 ("checksum", self._expected.checksum, checksum))  # fmt: skip
        for field, expected, actual in pairs:
            if expected is not None and not hmac.compare_digest(expected, actual.lower()):
                raise ChecksumMismatch(
                    f"Image data does not match the expected {field}: expected {expected}, got {actual}"
                )


def _safety_message(detected: fi.FileInspector, failures: dict[str, Any]) -> str:
    """Turn format_inspector's per-check failures into one sentence a user can act on."""
    name = detected.NAME
    reasons: list[str] = []
    for check, failure in sorted(failures.items()):
        text = str(failure)
        if check == "backing_file":
            reasons.append("it has a backing file (flatten it with 'qemu-img convert' first)")
        elif check == "data_file":
            reasons.append("it has an external data file (data_file); the image must hold its own data")
        elif check == "unknown_features":
            reasons.append(f"it uses {name} features this cloud does not know ({text})")
        elif check == "descriptor" and text == "Unsupported subformat":
            create_type = getattr(detected, "vmdktype", "unknown")
            reasons.append(
                f"its create type {create_type!r} is not allowed (only monolithicSparse and streamOptimized)"
            )
        elif check == "descriptor" and text == "Invalid extent filenames found":
            reasons.append("its descriptor points at another file")
        elif check == "banned":
            reasons.append("this cloud does not accept that format")
        else:
            reasons.append(f"{check}: {text}")
    return f"Image data is {name} and is not allowed: {'; '.join(reasons)}"


def _human(size: int) -> str:
    if size >= GiB and size % GiB == 0:
        return f"{size // GiB} GiB ({size} bytes)"
    return f"{size} bytes"
