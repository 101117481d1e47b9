"""An object uploaded to the uploads bucket, read as an import task (plain Python: no AWS here).

Layout: ``uploads/<project_id>/<file name>``. The project in the key is the task's owner and nothing
else can change that: the bucket's IAM policies decide who may write under which prefix, so the key
is the only statement about ownership we can trust. The object's user metadata (``x-amz-meta-*``)
describes the image; where it says nothing, the file name's extension gives the disk format.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Any

from pydantic import BaseModel, ConfigDict

from imagetasks.domain.conversion import whole_size
from imagetasks.domain.errors import DomainError
from imagetasks.domain.images import ADMIN_ONLY_VISIBILITY

UPLOADS_ROOT = "uploads/"
UPLOAD_SOURCE = "s3-upload"  # the task input's "source": the import step removes such objects once imported
# Task input naming the exact object an upload task imports: the import reads only that object and
# removes it only while it is still that object (a re-upload of the same key is someone's new data).
SOURCE_ETAG = "source_etag"
SOURCE_VERSION_ID = "source_version_id"
DEFAULT_CONTAINER_FORMAT = "bare"
MAX_PROJECT_ID_LENGTH = 255  # as for a token's project (imagetasks.auth.identity.Caller)

EXTENSION_FORMATS = {
    ".qcow2": "qcow2",
    ".raw": "raw",
    ".img": "raw",
    ".vmdk": "vmdk",
    ".vhd": "vhd",
    ".vhdx": "vhdx",
    ".iso": "iso",
    ".vdi": "vdi",
}
#: A compressed upload (``disk.qcow2.gz``) is named after its image plus one of these; the data is
#: decompressed by its first bytes whatever its name (domain.compression).
COMPRESSION_EXTENSIONS = (".gz", ".xz", ".bz2", ".zst")

# Metadata names that read like ownership or identity. They are dropped, never passed on as image
# properties, so that no later step can mistake one for the owner: the owner is the key's project.
OWNERSHIP_METADATA = frozenset(
    {"owner", "owner_id", "project", "project_id", "tenant", "tenant_id", "id", "user_id", "status"}
)
# Metadata that is not an image property but a part of the task input (checked like the API's).
CHECKSUM_METADATA = ("checksum", "os_hash_value")

# urlsplit (which reads the s3:// location later) treats these as the start of a query or fragment,
# and silently drops tabs and newlines: such a key would name another object.
_UNSAFE_IN_LOCATION = re.compile(r"[?#\x00-\x1f\x7f]")
# Stable namespace for upload task ids (uuid5 of the event's identity).
UPLOAD_TASK_NAMESPACE = uuid.UUID("2d3c8f4e-6a51-4c0b-9b7e-5f8a1c2e7d93")


class NotAnUpload(DomainError):
    """The key names no project we can trust (or is not a file): nobody owns it, so no task."""


class UploadKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    project_id: str
    file_name: str  # everything after the project's prefix; may hold "/" (refused in plan_import)


class UploadedObject(BaseModel):
    """What S3 says about the object: its place, size, user metadata (keys without x-amz-meta-),
    and which object it is: its ETag (without S3's quotes) and version, if the bucket keeps versions."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    size: int
    metadata: dict[str, str]
    etag: str | None = None
    version_id: str | None = None


class UploadedVersion(BaseModel):
    """The one object an upload task imports (and may remove): ``None`` fields are not known."""

    model_config = ConfigDict(frozen=True)

    etag: str | None = None
    version_id: str | None = None

    @classmethod
    def of_task(cls, task_input: Mapping[str, Any]) -> UploadedVersion:
        etag = task_input.get(SOURCE_ETAG)
        version_id = task_input.get(SOURCE_VERSION_ID)
        return cls(
            etag=etag if isinstance(etag, str) and etag else None,
            version_id=version_id if isinstance(version_id, str) and version_id else None,
        )


def unquoted_etag(etag: str | None) -> str | None:
    """S3 answers ETags in quotes (``"9b2c..."``) and events carry them bare: compare them bare."""
    return etag.strip('"') or None if etag else None


class ImportPlan(BaseModel):
    """The task an upload becomes. `refusal` set: the task is created already failed with that message."""

    model_config = ConfigDict(frozen=True)

    owner: str
    task_input: dict[str, Any]
    refusal: str | None = None
    refusal_code: str = "invalid_input"  # the failed task's error_code (domain.failures.ERROR_CODES)
    ignored_metadata: tuple[str, ...] = ()  # ownership-like names dropped from the properties


def parse_upload_key(key: str) -> UploadKey:
    """The project and file name of a decoded key, or NotAnUpload saying why it has no owner."""
    if not key.startswith(UPLOADS_ROOT):
        raise NotAnUpload(f"the key {key!r} is not under {UPLOADS_ROOT}<project_id>/")
    project_id, separator, file_name = key[len(UPLOADS_ROOT) :].partition("/")
    if not separator or not project_id.strip():
        raise NotAnUpload(f"the key {key!r} has no project: uploads go under {UPLOADS_ROOT}<project_id>/")
    if (
        project_id in (".", "..")
        or len(project_id) > MAX_PROJECT_ID_LENGTH
        or _UNSAFE_IN_LOCATION.search(project_id)
    ):
        raise NotAnUpload(f"the key {key!r} does not start with a valid project id")
    if not file_name or file_name.endswith("/"):
        raise NotAnUpload(f"the key {key!r} is a folder, not an image file")
    if any(segment in ("", ".", "..") for segment in file_name.split("/")):
        # The import filter refuses such paths anyway; a key that plays with them is not trusted.
        raise NotAnUpload(f"the key {key!r} has an empty, '.' or '..' path segment")
    return UploadKey(project_id=project_id, file_name=file_name)


def upload_task_id(
    bucket: str, key: str, version_id: str | None, etag: str | None, sequencer: str | None
) -> str:
    """The task id of one uploaded object: the same event delivered twice gives the same id, so the
    tasks table's create-if-absent refuses the second task even without an idempotency record."""
    identity = "\n".join((bucket, key, version_id or "", etag or "", sequencer or ""))
    return str(uuid.uuid5(UPLOAD_TASK_NAMESPACE, identity))


def disk_format_from_name(file_name: str) -> str | None:
    lowered = file_name.lower()
    compressed = next((ext for ext in COMPRESSION_EXTENSIONS if lowered.endswith(ext)), "")
    lowered = lowered.removesuffix(compressed)
    for extension, disk_format in EXTENSION_FORMATS.items():
        if lowered.endswith(extension):
            return disk_format
    return None


def decode_metadata_value(value: str) -> str:
    """S3 returns non-ASCII metadata values RFC 2047-encoded (``=?UTF-8?B?...?=``); decode them."""
    if "=?" not in value:
        return value
    return str(make_header(decode_header(value)))


def metadata_properties(metadata: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """User metadata as property names (``disk-format`` → ``disk_format``) and decoded values, and
    the names that were dropped because they read like ownership. ValueError if a value is garbled."""
    properties: dict[str, str] = {}
    dropped: list[str] = []
    for raw_name, raw_value in metadata.items():
        name = raw_name.strip().lower().replace("-", "_")
        if not name:
            continue
        if name in OWNERSHIP_METADATA:
            dropped.append(raw_name)
            continue
        try:
            properties[name] = decode_metadata_value(raw_value)
        except (HeaderParseError, LookupError, ValueError) as error:  # binascii.Error is a ValueError
            raise ValueError(f"the metadata x-amz-meta-{raw_name} could not be read") from error
    return properties, dropped


def _base_input(bucket: str, key: str, where: UploadKey) -> dict[str, Any]:
    return {
        "import_from": f"s3://{bucket}/{key}",
        "import_from_format": None,
        "image_properties": {"name": where.file_name.rsplit("/", 1)[-1]},
        "source": UPLOAD_SOURCE,
    }


def plan_unreadable(bucket: str, key: str, where: UploadKey, reason: str) -> ImportPlan:
    """The failed task of an object S3 would not describe (gone, or access denied)."""
    return ImportPlan(
        owner=where.project_id,
        task_input=_base_input(bucket, key, where),
        refusal=f"{reason}; upload the image again.",
        refusal_code="source_unavailable",
    )


def plan_import(upload: UploadedObject, where: UploadKey, max_image_size: int | None = None) -> ImportPlan:
    """The import task for an uploaded object. Problems the uploader can fix (empty object, unknown
    format, sub-folder) give a plan with `refusal`: the owner sees the reason through the tasks API."""
    task_input = _base_input(upload.bucket, upload.key, where)

    dropped: list[str] = []

    def refused(message: str, code: str = "invalid_input") -> ImportPlan:
        return ImportPlan(
            owner=where.project_id,
            task_input=task_input,
            refusal=message,
            refusal_code=code,
            ignored_metadata=tuple(dropped),
        )

    if "/" in where.file_name:
        return refused(
            f"The upload {upload.key} is in a sub-folder; only files directly under "
            f"{UPLOADS_ROOT}{where.project_id}/ are imported. Upload it again there."
        )
    if _UNSAFE_IN_LOCATION.search(where.file_name):
        return refused(
            f"The file name of {upload.key!r} contains '?', '#' or control characters, which an "
            "s3:// location cannot carry. Rename the file and upload it again."
        )
    try:
        metadata, dropped = metadata_properties(upload.metadata)
    except ValueError as error:
        return refused(f"The upload {upload.key} cannot be imported: {error}.")
    checksums = {name: metadata.pop(name) for name in CHECKSUM_METADATA if name in metadata}
    disk_format = metadata.pop("disk_format", None) or disk_format_from_name(where.file_name)
    properties: dict[str, Any] = {
        **metadata,
        "name": metadata.get("name") or where.file_name,
        "container_format": metadata.get("container_format") or DEFAULT_CONTAINER_FORMAT,
    }
    if disk_format is not None:
        properties["disk_format"] = disk_format
    task_input.update({"import_from_format": disk_format, "image_properties": properties, **checksums})
    if upload.etag:
        task_input[SOURCE_ETAG] = upload.etag
    if upload.version_id:
        task_input[SOURCE_VERSION_ID] = upload.version_id
    if upload.size <= 0:
        return refused(
            f"The upload {upload.key} is empty (0 bytes); upload the image file again.", "image_rejected"
        )
    if max_image_size is not None and upload.size > max_image_size:
        # Known before any work: refused now rather than after reading it all.
        return refused(
            f"The upload {upload.key} is {whole_size(upload.size, round_up=True)}; this cloud imports "
            f"images of at most {whole_size(max_image_size, round_up=False)}.",
            "too_large",
        )
    if properties.get("visibility") == ADMIN_ONLY_VISIBILITY:
        # Nothing says who uploaded, only which project's prefix: uploads make no public image.
        return refused(
            f"The upload {upload.key} asks for a public image (x-amz-meta-visibility: public), which "
            "only an admin may make: upload it without that metadata, then ask an admin to make the "
            "image public (PATCH /v2/images/{image_id})."
        )
    if disk_format is None:
        known = ", ".join(EXTENSION_FORMATS)
        return refused(
            f"The disk format of {upload.key} is unknown: set the object's x-amz-meta-disk-format "
            f"metadata, or name the file with one of these extensions: {known} (followed by "
            f"{', '.join(COMPRESSION_EXTENSIONS)} if it is compressed)."
        )
    return ImportPlan(owner=where.project_id, task_input=task_input, ignored_metadata=tuple(dropped))
