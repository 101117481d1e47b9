"""Work-arounds for moto behaviour that real AWS does not have.

Each patch is registered with `@moto_patch`: the moto release it was written for (it replaces that
release's private methods) and, in one line, the upstream behaviour it corrects (the reports for
moto are drafted in docs/moto-upstream.md). Importing this module with another moto installed
raises: the patches must be compared with the new release before the pin in requirements-dev.txt
moves.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import ctypes
import ctypes.util
import functools
import hashlib
import io
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, TypeVar, cast

from local.template import recase_keys

#: The moto every patch below was written for (requirements-dev.txt pins it).
MOTO_VERSION = "5.2.5"

Patch = TypeVar("Patch", bound=Callable[..., None])


@dataclass(frozen=True)
class MotoPatch:
    name: str
    written_for: str
    corrects: str  # the upstream behaviour it corrects, in one line


#: Every patch of this module, by name.
PATCHES: dict[str, MotoPatch] = {}


def refuse_other_moto(written_for: str, installed: str | None = None) -> None:
    """RuntimeError unless the installed moto is the release a patch was written for."""
    installed = installed or version("moto")
    if installed != written_for:
        raise RuntimeError(
            f"local/moto_fixes.py patches private methods of moto {written_for}, but moto {installed} "
            "is installed: compare each patch with the new release (docs/moto-upstream.md says what "
            "each corrects) before changing the pin in requirements-dev.txt"
        )


def moto_patch(*, corrects: str, written_for: str = MOTO_VERSION) -> Callable[[Patch], Patch]:
    """Register a patch of moto `written_for` (calling it applies it, once); refuses another moto when
    this module is imported."""
    refuse_other_moto(written_for)
    if "\n" in corrects:
        raise ValueError("say what a patch corrects in one line")

    def register(patch: Patch) -> Patch:
        PATCHES[patch.__name__] = MotoPatch(patch.__name__, written_for, corrects)
        return cast(Patch, functools.cache(patch))  # applied once per process: idempotent

    return register


_LOCK = threading.RLock()  # held by every write of moto's DynamoDB once `serialise_dynamodb_writes` ran


@moto_patch(
    corrects="DynamoDB: a write during transact_write_items' rollback copy fails it with "
    "'dictionary changed size during iteration' instead of being serialised",
)
def serialise_dynamodb_writes() -> None:
    """Real DynamoDB serialises conflicting writes itself (a conflict is a `TransactionConflict`, which
    the adapters translate and retry). Here handlers run in many threads at once, so the writes of
    moto's DynamoDB backend run one at a time, under one lock held only for each backend call (they
    never call back into our handlers). `roll_back_transactions_by_item` goes in first: the lock
    wraps it."""
    from moto.dynamodb.models import DynamoDBBackend

    roll_back_transactions_by_item()
    snapshot_table_reads()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
        setattr(DynamoDBBackend, name, _within(lambda: _LOCK, getattr(DynamoDBBackend, name)))


def _within(context: Callable[[], contextlib.AbstractContextManager[Any]], method: Callable[..., Any]) -> Any:
    """`method`, each call of it inside a `context()`."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with context():
            return method(*args, **kwargs)

    return run


@contextlib.contextmanager
def _deeper(counter: threading.local) -> Iterator[None]:
    """This thread's `counter.depth` one more while inside: how a patch knows it runs within a call
    (a transaction, a GET or a copy, a request through botocore's stubber)."""
    counter.depth = getattr(counter, "depth", 0) + 1
    try:
        yield
    finally:
        counter.depth -= 1


_IN_TRANSACTION = threading.local()


@moto_patch(
    corrects="DynamoDB: TransactWriteItems deep-copies each table it touches once per item, so "
    "every transaction costs time in proportion to the table's size",
)
def roll_back_transactions_by_item() -> None:
    """moto's `transact_write_items` keeps a deep copy of a whole table, made again for each item
    of the transaction on that table, to roll back to: the local stack's most expensive operation,
    under the write lock (the e2e tier's tables slowed every create and PATCH as they filled). The
    patched method keeps a copy of each item the transaction names instead (a missing one as
    missing) and puts those back when moto rolls back; the table copies are skipped (moto then
    "restores" the very table it changed, and the items are put back by us)."""
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items

    class _SkipTableCopies:
        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            if getattr(_IN_TRANSACTION, "depth", 0) and isinstance(value, Table):
                return value
            return copy.deepcopy(value, memo)

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        # The copies are taken under the write lock too: a write between the copy and the rollback
        # would otherwise be undone with the transaction.
        with _LOCK:
            saved = []
            for operation in transact_items:
                try:
                    (kind, op), *_ = operation.items()
                    table = self.tables[op["TableName"]]
                    attrs = op["Item"] if kind == "Put" else op["Key"]
                    hash_value = DynamoType(attrs[table.hash_key_attr])
                    range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
                except Exception:  # noqa: S112 - moto itself refuses a malformed item, before writing it
                    continue
                saved.append(
                    (table, hash_value, range_value, copy.deepcopy(table.get_item(hash_value, range_value)))
                )
            try:
                with _deeper(_IN_TRANSACTION):
                    original(self, transact_items)
            except BaseException:
                for table, hash_value, range_value, item in reversed(saved):
                    _put_back(table, hash_value, range_value, item)
                raise

    models.copy = _SkipTableCopies()  # type: ignore[attr-defined,assignment]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _put_back(table: Any, hash_value: Any, range_value: Any, item: Any) -> None:
    """Make the table's item under this key `item` again (absent when None)."""
    if range_value is None:
        if item is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = item
    elif item is None:
        table.items.get(hash_value, {}).pop(range_value, None)
    else:
        table.items[hash_value][range_value] = item


@moto_patch(
    corrects="DynamoDB: a Query or Scan iterates the table's items while another thread's write "
    "adds one, and fails with 'dictionary changed size during iteration'",
)
def snapshot_table_reads() -> None:
    """moto's `Table.all_items` and `Table.has_idx_items` (what Query and Scan read)
    iterate a snapshot of the table's items. Reads are not under the write lock (a Query of a big
    table takes long in moto); `list()` of a dict's values is taken whole, without other threads
    running in between, so a write meanwhile no longer breaks the read."""
    from moto.dynamodb.models.table import Table

    Table.all_items = _all_items  # type: ignore[method-assign]
    Table.has_idx_items = _has_idx_items  # type: ignore[method-assign]


def _stored_items(table: Any) -> list[Any]:
    groups = list(table.items.values())
    if not table.range_key_attr:
        return groups
    return [item for group in groups for item in list(group.values())]


def _all_items(self: Any) -> list[Any]:
    return sorted(_stored_items(self), key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)


def _has_idx_items(self: Any, index_name: str) -> list[Any]:
    columns = {attribute["AttributeName"] for attribute in self.get_index(index_name).schema}
    return [item for item in _stored_items(self) if columns.issubset(set(item.attrs))]


# ======================================================================== S3 at real image sizes
#
# moto 5.2.5 keeps each object in a `tempfile.SpooledTemporaryFile` (on disk above ~5 MiB), but its
# hot paths read whole objects into memory: `FakeKey.value` returns every byte, CompleteMultipartUpload
# joins all parts in a bytearray, copies it, and joins them again for the checksum; CopyObject and
# UploadPartCopy read the whole source (each 512 MiB part of a copy re-read all of it); GET returns
# `key.value` and a ranged GET slices it; the aws-chunked request bodies (botocore's reader and moto's
# decoder) are assembled by repeated `bytes +=`, quadratic in the number of 1 MiB chunks. The patches
# below keep objects in their files and move bytes file to file in 8 MiB pieces, with the same ETags,
# checksums and headers. Bodies of GET responses become `KeyReader`s, streamed both by the moto server
# (werkzeug iterates them) and in-process (botocore reads them as the raw stream of its StreamingBody).

_PIECE = 8 * 1024 * 1024
_STREAMING = threading.local()  # depth > 0: `FakeKey.value` hands out a KeyReader, not the bytes


class KeyReader:
    """A read-only view of bytes [start, start + length) of an object's file.

    It reads with `os.pread` on its own duplicate of the file's descriptor, so it neither moves the
    key's file position nor breaks when moto closes the key's file (a delete, an overwrite): the data
    stays until the reader is closed. A slice is another reader; iterating yields 8 MiB pieces."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self._fd = fd
        self._start = start
        self._length = max(0, length)
        self._position = 0

    @classmethod
    def of_key(cls, key: Any) -> KeyReader:
        with key.lock:
            fd = os.dup(key._value_buffer.fileno())
        return cls(fd, 0, key.size)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: slice) -> KeyReader:
        if not isinstance(index, slice):
            raise TypeError("a KeyReader can only be sliced")
        begin, end, step = index.indices(self._length)
        if step != 1:
            raise ValueError("a KeyReader slice must be contiguous")
        return KeyReader(os.dup(self._fd), self._start + begin, max(0, end - begin))

    def read(self, amt: int | None = None) -> bytes:
        if self._fd < 0:
            raise ValueError("read of a closed KeyReader")
        left = self._length - self._position
        wanted = left if amt is None or amt < 0 else min(amt, left)
        pieces = []
        while wanted > 0:
            piece = os.pread(self._fd, min(wanted, 1 << 30), self._start + self._position)
            if not piece:
                raise OSError(f"object file ended {wanted} bytes early")
            pieces.append(piece)
            self._position += len(piece)
            wanted -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def __iter__(self) -> Iterator[bytes]:
        try:
            while piece := self.read(_PIECE):
                yield piece
        finally:
            self.close()

    def stream(self, **_: Any) -> Iterator[bytes]:  # botocore's AWSResponse.content reads this way
        return iter(self)

    def tell(self) -> int:
        return self._position

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


@dataclass
class FileValue:
    """A finished object file (a rolled-over SpooledTemporaryFile) handed to `FakeKey.value`: the key
    takes the file itself instead of its bytes. `md5` (hex), when known, is the key's plain ETag."""

    buffer: Any
    size: int
    md5: str | None = None

    @classmethod
    def of_pieces(cls, pieces: Iterable[bytes], size: int, digest: Any = None) -> FileValue:
        """A new file of `size` bytes written from `pieces` (and their md5, if `digest`), in one pass."""
        from moto.settings import get_s3_default_key_buffer_size

        # Owned by the key it is handed to, which closes it (dispose) when the object goes.
        buffer = tempfile.SpooledTemporaryFile(get_s3_default_key_buffer_size())  # noqa: SIM115
        buffer.rollover()  # straight to disk: the object is larger than the in-memory limit
        try:
            for piece in pieces:
                if digest is not None:
                    digest.update(piece)
                buffer.write(piece)
            buffer.flush()
        except BaseException:
            buffer.close()
            raise
        return cls(buffer, size, digest.hexdigest() if digest is not None else None)


def _pieces(key: Any) -> Iterator[bytes]:
    """A key's bytes in pieces of at most 8 MiB, without reading them all at once."""
    if getattr(key._value_buffer, "_rolled", True):
        yield from KeyReader.of_key(key)
    else:  # small objects stay in memory, as moto keeps them
        value = key.value
        for offset in range(0, len(value), _PIECE):
            yield value[offset : offset + _PIECE]


class _Checksum:
    """`moto.s3.utils.compute_checksum`, fed piece by piece (same algorithms, same fallbacks)."""

    def __init__(self, algorithm: str) -> None:
        from moto.core.compat import HAS_CRT  # what compute_checksum decides with

        self._hash: Any = None
        self._crc: Callable[[bytes, int], int] = binascii.crc32  # moto's fallback for the other CRCs too
        self._width = 4
        self._value = 0
        if algorithm == "SHA1":
            self._hash = hashlib.sha1(usedforsecurity=False)
        elif algorithm == "CRC32C":
            with contextlib.suppress(ImportError):
                import crc32c

                self._crc = crc32c.crc32c
        elif algorithm == "CRC64NVME" and HAS_CRT:
            from awscrt import checksums

            self._crc, self._width = checksums.crc64nvme, 8
        elif algorithm not in ("CRC32", "CRC64NVME"):
            self._hash = hashlib.sha256(usedforsecurity=False)

    def update(self, data: bytes) -> None:
        if self._hash is not None:
            self._hash.update(data)
        else:
            self._value = self._crc(data, self._value)

    def digest(self) -> bytes:
        if self._hash is not None:
            return bytes(self._hash.digest())
        return self._value.to_bytes(self._width, "big")


def _complete(self: Any, body: Iterator[tuple[int, str]]) -> tuple[Any, str, tuple[str, str, int] | None]:
    """FakeMultipart.complete: the same checks, ETag and checksum; the parts are copied file to file
    into the object's file, never joined in memory."""
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
    from moto.settings import S3_UPLOAD_PART_MIN_SIZE, get_s3_default_key_buffer_size
    from moto.utilities.utils import md5_hash

    md5s = bytearray()
    chosen: list[Any] = []
    for pn, etag in body:
        part = self.parts.get(pn)
        part_etag = part.etag.replace('"', "") if part is not None else None
        if part_etag is None or part_etag != etag.replace('"', ""):
            raise InvalidPart()
        if chosen and chosen[-1].contentsize < S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        md5s.extend(bytes.fromhex(part_etag))
        chosen.append(part)
    if not chosen:
        raise MalformedXML

    # moto's MultipartChecksumBuilder, fed piece by piece: the checksum of every byte (FULL_OBJECT,
    # CRC64NVME's only type), or the checksum of the parts' checksums (COMPOSITE).
    algorithm = self.metadata.get("x-amz-checksum-algorithm") or "CRC64NVME"
    checksum_type = self.metadata.get("x-amz-checksum-type") or (
        "FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE"
    )
    composite = checksum_type == "COMPOSITE"
    whole = _Checksum(algorithm)

    def pieces() -> Iterator[bytes]:
        for part in chosen:
            checksum = _Checksum(algorithm) if composite else whole
            for piece in _pieces(part):
                checksum.update(piece)
                yield piece
            if composite:
                whole.update(checksum.digest())

    size = sum(part.contentsize for part in chosen)
    value: Any
    if size <= get_s3_default_key_buffer_size():  # small: in memory, as moto would keep it
        value = b"".join(pieces())
    else:
        value = FileValue.of_pieces(pieces(), size)
    checksum = (checksum_type, base64.b64encode(whole.digest()).decode(), len(chosen) if composite else 1)
    return value, f"{md5_hash(bytes(md5s)).hexdigest()}-{len(chosen)}", checksum


def _value_setter(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """`FakeKey.value`'s setter, which also takes a KeyReader or a FileValue."""
    from moto.utilities.utils import md5_hash

    def value(self: Any, new_value: Any) -> None:
        if isinstance(new_value, KeyReader):
            if len(new_value) <= self._max_buffer_size:  # small: in memory, as moto keeps it
                with contextlib.closing(new_value):
                    new_value = new_value.read()
            else:
                new_value = FileValue.of_pieces(new_value, len(new_value), md5_hash())
        if isinstance(new_value, FileValue):
            previous, self._value_buffer = self._value_buffer, new_value.buffer
            previous.close()
            self.contentsize = new_value.size
            if self._etag is None and new_value.md5 is not None:
                self._etag = new_value.md5  # what the lazy `etag` would compute from these bytes
            return
        if isinstance(new_value, bytes | bytearray) and len(new_value) > self._max_buffer_size:
            # Written to the memory buffer first, SpooledTemporaryFile would copy it twice more.
            self._value_buffer.seek(0)
            self._value_buffer.truncate()
            self._value_buffer.rollover()
        original(self, new_value)

    return value


def _decode_aws_chunked(self: Any, body: Any) -> bytes:
    """S3Response._handle_encoded_body in linear time (moto's appends each chunk to a bytes)."""
    if not body:
        return b""
    if self.request.headers.get(_UNFRAMED):
        return bytes(body) if not isinstance(body, bytes) else body
    if not isinstance(body, bytes | bytearray):
        body = body.read()
    view = memoryview(body)
    pieces: list[memoryview] = []

    def after_line(start: int) -> int:
        end = body.find(b"\n", start)
        return len(body) if end < 0 else end + 1

    position = 0
    while True:  # a chunk: its size line, its bytes, CRLF; the last one's size is 0
        start = after_line(position)
        size = int(bytes(view[position:start]).strip(), 16)
        if size <= 0:
            return b"".join(pieces)
        pieces.append(view[start : start + size])
        position = after_line(min(len(body), start + size))


#: Set on an in-process request whose aws-chunked body was handed over unframed (see `_unframed`).
_UNFRAMED = "x-imagetasks-unframed"


def _unframed(body: Any, headers: Any) -> tuple[bytes, dict[str, Any]] | None:
    """An in-process aws-chunked request's body (botocore's AwsChunkedWrapper around the caller's
    bytes) as the caller's bytes themselves, with the trailer's checksum as a header. Framing then
    decoding a 64 MiB part made two more copies of it, alive at once while moto stored the part
    (and several parts upload at once). The signed headers stay as they are (the local stack
    checks signatures); `_UNFRAMED` tells `_decode_aws_chunked` there is nothing to decode.
    None when the wrapped body is not bytes in memory: then it is framed and decoded as before."""
    raw = getattr(body, "_raw", None)
    checksum_cls = getattr(body, "_checksum_cls", None)
    name = getattr(body, "_checksum_name", None)
    if not isinstance(raw, io.BytesIO) or raw.tell() != 0 or checksum_cls is None or not name:
        return None
    payload = raw.read()  # the BytesIO's own bytes object: no copy
    checksum = checksum_cls()
    checksum.update(payload)
    plain = dict(headers.items())
    plain[name] = checksum.b64digest()  # what the trailer would have carried
    plain[_UNFRAMED] = "1"
    return payload, plain


_REQUESTS = threading.local()  # the in-process requests built during this thread's current call


def _releasing_bodies(process_request: Callable[..., Any]) -> Callable[..., Any]:
    """The requests a call built let go of their bodies when it returns. A werkzeug request sits in a
    reference cycle (its environ names it), so its body (the cached data, and the input stream over
    it) lived on until the cycle collector ran: a 4 GiB import left dozens of 64 MiB parts waiting."""

    @functools.wraps(process_request)
    def run(self: Any, request: Any) -> Any:
        made = _REQUESTS.__dict__.setdefault("made", [])
        first = len(made)
        try:
            with _deeper(_REQUESTS):
                return process_request(self, request)
        finally:
            for handled in made[first:]:
                for name in ("_cached_data", "data", "stream"):
                    handled.__dict__.pop(name, None)
                handled.environ["wsgi.input"] = io.BytesIO()
                handled.environ.pop("werkzeug.request", None)
            del made[first:]

    return run


@moto_patch(
    corrects="S3: objects are read whole into memory on GET, copy, part copy, multipart completion "
    "and aws-chunked decoding, so multi-GiB images exhaust memory and time",
)
def stream_s3_objects() -> None:
    """Idempotent: patch moto's S3 so objects move file to file and GET bodies stream (see above)."""
    import responses
    from botocore.httpchecksum import AwsChunkedWrapper
    from moto.core import botocore_stubber
    from moto.core.request import Request
    from moto.s3.models import FakeKey, FakeMultipart, S3Backend
    from moto.s3.responses import S3Response

    value: Any = FakeKey.__dict__["value"]

    def get_value(self: Any) -> Any:
        if getattr(_STREAMING, "depth", 0) and getattr(self._value_buffer, "_rolled", True):
            return KeyReader.of_key(self)
        return value.fget(self)

    FakeKey.value = property(get_value, _value_setter(value.fset))  # type: ignore[method-assign,assignment]
    FakeMultipart.complete = _complete  # type: ignore[method-assign]
    # These read `src_key.value` / `key.value` once, to copy it or to answer it: a KeyReader instead.
    streaming = functools.partial(_deeper, _STREAMING)
    S3Backend.copy_object = _within(streaming, S3Backend.copy_object)  # type: ignore[method-assign]
    S3Backend.upload_part_copy = _within(streaming, S3Backend.upload_part_copy)  # type: ignore[method-assign]
    S3Response.get_object = _within(streaming, S3Response.get_object)  # type: ignore[method-assign]
    S3Response._handle_encoded_body = _decode_aws_chunked  # type: ignore[method-assign]

    from_primitives = Request.from_primitives.__func__  # type: ignore[attr-defined]

    def linear_from_primitives(cls: Any, method: str, url: str, headers: Any, body: Any = None) -> Any:
        if isinstance(body, AwsChunkedWrapper):
            unframed = _unframed(body, headers)
            if unframed is not None:
                body, headers = unframed
            else:  # read whole in linear time: botocore's own read() appends to a bytes
                body = b"".join(iter(functools.partial(body.read, 1024 * 1024), b""))
        request = from_primitives(cls, method, url, headers, body)
        if isinstance(body, bytes):
            request._cached_data = body  # `request.data`: these bytes, not werkzeug's copy of them
        if getattr(_REQUESTS, "depth", 0):  # in-process: released when the call returns
            _REQUESTS.made.append(request)
        return request

    Request.from_primitives = classmethod(linear_from_primitives)  # type: ignore[method-assign,assignment]
    botocore_stubber.BotocoreStubber.process_request = _releasing_bodies(  # type: ignore[method-assign]
        botocore_stubber.BotocoreStubber.process_request
    )

    # In-process (botocore's stubber): a KeyReader is the raw stream of botocore's StreamingBody.
    raw_response = botocore_stubber.MockRawResponse

    def mock_raw_response(body: Any) -> Any:
        return body if isinstance(body, KeyReader) else raw_response(body)

    botocore_stubber.MockRawResponse = mock_raw_response  # type: ignore[assignment,misc]

    # Through the `responses` library (plain `requests` calls to amazonaws.com URLs): bytes, as before.
    handle_body = responses._handle_body

    def materialised(body: Any) -> Any:
        if isinstance(body, KeyReader):
            with contextlib.closing(body):
                body = body.read()
        return handle_body(body)

    responses._handle_body = materialised


# ======================================================================== memory retained per task
#
# Every moto model (`BaseModel.__new__`) appends itself to its class's `instances_tracked` list, for
# moto's dashboard and for `reset()`, and nothing ever removes it. DynamoDB's `transact_write_items`
# deep-copies each table it touches (its rollback copy), and every copied `Item` is a new model: a task's
# handful of transactions over a table of N items left ~N items behind each time, so the local stack
# kept growing with every task (quadratically), and replaced or deleted S3 objects kept their files.
# The lists become weak: a model is listed while something else still holds it.


class WeakInstances:
    """`instances_tracked` holding weak references: iterating yields the instances still alive."""

    def __init__(self) -> None:
        self._refs: dict[int, Any] = {}

    def append(self, instance: Any) -> None:
        key, refs = id(instance), self._refs
        with contextlib.suppress(TypeError):  # not weak-referenceable (no moto model is): not listed
            refs[key] = weakref.ref(instance, lambda _ref: refs.pop(key, None))

    def __iter__(self) -> Iterator[Any]:
        for ref in list(self._refs.values()):
            instance = ref()
            if instance is not None:
                yield instance


@moto_patch(
    corrects="core: every model stays in its class's instances_tracked list forever, so memory "
    "grows with each DynamoDB transaction and dropped S3 objects keep their files",
)
def release_dropped_models() -> None:
    """Idempotent: moto's model registries stop keeping models alive (see above)."""
    from moto.core.common_models import BaseModel
    from moto.s3.models import FakeKey

    def __new__(cls: Any, *args: Any, **kwargs: Any) -> Any:
        instance = super(BaseModel, cls).__new__(cls)
        tracked = cls.__dict__.get("instances_tracked")
        if not isinstance(tracked, WeakInstances):  # a class's first model, or after reset_model_data()
            tracked = WeakInstances()
            for earlier in cls.__dict__.get("instances_tracked") or ():
                tracked.append(earlier)
            cls.instances_tracked = tracked
        tracked.append(instance)
        return instance

    BaseModel.__new__ = __new__  # type: ignore[method-assign]
    # A dropped object is now collected: close its file without moto's "not disposed in time".
    FakeKey.__del__ = FakeKey.dispose  # type: ignore[method-assign]


# glibc gives each thread that allocates its own heap ("arena", up to 8 per core), and raises its
# mmap threshold to the size of the largest block freed (up to 32 MiB). The local stack runs moto and
# every handler in one process, in many threads, moving images in 1-64 MiB buffers: those buffers
# then came from the arenas, which kept them after they were freed (a 1 GiB import left ~600 MiB
# of free arena memory behind, a 4 GiB one more). Two arenas, and every block over 128 KiB mapped
# and unmapped on its own, keep the process at what it really holds.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@functools.cache  # once per process: idempotent
def bounded_malloc() -> None:
    """Idempotent: glibc's allocator returns large freed blocks at once (see above); elsewhere a
    no-op."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 2)
        mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def local_moto_fixes() -> None:
    """What the local stack needs beyond `serialise_dynamodb_writes`: large objects, bounded memory."""
    bounded_malloc()
    stream_s3_objects()
    release_dropped_models()
    stop_execution_with_cause()
    ecs_integration_case()
    callbacks_skip_unstarted_executions()


@moto_patch(
    corrects="Step Functions: StopExecution drops its error and cause, and shows the stop only "
    "when the running state returns",
)
def stop_execution_with_cause() -> None:
    """moto's StopExecution drops the request's `error` and `cause` (it stops with empty ones);
    Step Functions keeps them, and shows them in DescribeExecution and in the execution's status
    change event, which is how a cancelled task's reconciler learns who cancelled it. moto's
    interpreter also shows the stop only when the running state returns; Step Functions shows it
    at once, which is what makes a cancelled task fail while its step still runs (and the step
    stop at its next progress write)."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.stepfunctions.exceptions import ExecutionDoesNotExist
    from moto.stepfunctions.models import StateMachine, StepFunctionBackend
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.responses import StepFunctionResponse

    def machine_stop(self: Any, execution_arn: str, error: str = "", cause: str = "") -> Any:
        execution = next((x for x in self.executions if x.execution_arn == execution_arn), None)
        if execution is None:
            raise ExecutionDoesNotExist("Execution Does Not Exist: '" + execution_arn + "'")
        execution.stop(stop_date=utcnow(), error=error, cause=cause)
        # The interpreter's execution reflects a stop's status but not its error and cause.
        execution.error, execution.cause = error or None, cause or None
        # And only once its running state returns; Step Functions answers StopExecution with the
        # execution ABORTED (its status change event follows) while a Lambda it invoked runs on.
        # The interpreter sets the same status again when that state returns.
        if getattr(execution, "exec_status", None) is not None and execution.status == "RUNNING":
            execution.exec_status = ExecutionStatus.ABORTED
            execution.stop_date = utcnow()
        return execution

    def backend_stop(self: Any, execution_arn: str, error: str = "", cause: str = "") -> Any:
        self._validate_execution_arn(execution_arn)
        machine = self._get_state_machine_for_execution(execution_arn)
        return machine.stop_execution(execution_arn, error, cause)

    def response_stop(self: Any) -> Any:
        execution = self.stepfunction_backend.stop_execution(
            self._get_param("executionArn"), self._get_param("error") or "", self._get_param("cause") or ""
        )
        return ActionResult({"stopDate": execution.stop_date})

    StateMachine.stop_execution = machine_stop  # type: ignore[method-assign]
    StepFunctionBackend.stop_execution = backend_stop  # type: ignore[method-assign]
    StepFunctionResponse.stop_execution = response_stop  # type: ignore[method-assign]


@moto_patch(
    corrects="Step Functions: the ecs:runTask.sync integration passes PascalCase parameters to ECS "
    "and reads its camelCase answer as is (KeyError)",
)
def ecs_integration_case() -> None:
    """moto's copy of the ASL interpreter calls ECS with the state's PascalCase parameters and reads
    the answer in PascalCase, but its normalising hooks are empty: `ecs:runTask.sync` then fails with
    a KeyError. Step Functions maps `Cluster` to the API's `cluster` and answers `Tasks`, `TaskArn`:
    so do these (the `.sync` resolver reads the raw answer first, then normalises it)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
        StateTaskServiceEcs,
    )

    def normalise_parameters(self: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        recased = recase_keys(parameters, str.lower)
        parameters.clear()
        parameters.update(recased)

    def normalise_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(response, dict):
            recased = recase_keys(response, str.upper)
            response.clear()
            response.update(recased)

    StateTaskServiceEcs._normalise_parameters = normalise_parameters  # type: ignore[method-assign]
    StateTaskServiceEcs._normalise_response = normalise_response  # type: ignore[method-assign]


@moto_patch(
    corrects="Step Functions: a task-token callback fails with an AttributeError while another "
    "execution is listed as running but its worker has no environment yet",
)
def callbacks_skip_unstarted_executions() -> None:
    """moto lists an execution as RUNNING from StartExecution on, and its worker makes the
    environment that holds the execution's task tokens a moment later, in its own thread;
    SendTaskSuccess, SendTaskFailure and SendTaskHeartbeat look for the token in every execution's
    environment, and one caught in that moment fails the call with an AttributeError (a task of the
    workflow then failed `internal`: about 1 in 400 at 8 clients). An execution without an
    environment holds no token yet, so the lookups skip it."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original = StepFunctionsParserBackend._get_executions

    def _get_executions(self: Any, execution_status: Any = None) -> list[Any]:
        executions = original(self, execution_status)
        return [e for e in executions if getattr(e.exec_worker, "env", None) is not None]

    StepFunctionsParserBackend._get_executions = _get_executions  # type: ignore[method-assign]
