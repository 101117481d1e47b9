"""Compressed image sources: gzip, xz, bzip2 and zstd data is decompressed while it streams.

What is hashed, inspected and stored is the image the compressed data contains (as Glance's
``image_decompression`` import plugin makes an image of the decompressed data), so ``checksum``,
``os_hash_value``, ``size`` and the format checks all describe the decompressed image.

Compression is recognised by the first bytes of the data, never by a file name, a URL suffix or a
``Content-Encoding`` header: the same bytes give the same image whichever way they arrive, and a
name cannot make us decompress (or skip decompressing) anything. One layer is removed: an image
compressed twice is stored as the once-decompressed data (and then refused by the format checks
unless it is declared ``raw``).

Memory stays bounded whatever the data: the decoders are handed bounded input and asked for at most
``chunk_size`` bytes of output per call (zstd, whose decoder has no output bound, gets input pieces
small enough that even its largest expansion stays bounded). A decompression bomb is stopped while
it streams, at the first chunk past the image size limit or past the ratio limit, never after it
was written.
"""

from __future__ import annotations

import bz2
import lzma
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from imagetasks.domain.import_errors import CompressedSourceInvalid, ImageRejected, ImageTooLarge

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

GZIP, XZ, BZIP2, ZSTD = "gzip", "xz", "bzip2", "zstd"
COMPRESSIONS = (GZIP, XZ, BZIP2, ZSTD)
#: The tool a user can test (and redo) the file with.
_TOOLS = {GZIP: "gzip", XZ: "xz", BZIP2: "bzip2", ZSTD: "zstd"}

# gzip with deflate (the only method gzip defines), the xz stream header, zstd's frame magic, and
# bzip2's "BZh" + block size + the magic of the first block (or of the end of an empty stream):
# bzip2's three letters alone would also start a text file.
_PREFIXES = ((GZIP, b"\x1f\x8b\x08"), (XZ, b"\xfd7zXZ\x00"), (ZSTD, b"\x28\xb5\x2f\xfd"))
_BZIP2 = re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")
#: How many first bytes recognising every format needs.
MAGIC_LENGTH = 10

#: Input handed to a stdlib decoder per call (its unconsumed input is copied on every call).
_INPUT_PIECE = 256 * KiB
#: Decompressed data is handed on at least this often (seconds), even short of a whole chunk.
FLUSH_SECONDS = 1.0
#: zstd's decoder returns all the output of its input at once. A zstd block expands at most
#: 128 KiB from 4 bytes (an RLE block), so 4 KiB of input makes at most 128 MiB of output.
_ZSTD_INPUT_PIECE = 4 * KiB


def detect_compression(head: bytes) -> str | None:
    """The compression the data starting with ``head`` uses (gzip, xz, bzip2, zstd), or None."""
    for name, prefix in _PREFIXES:
        if head.startswith(prefix):
            return name
    if _BZIP2.match(head):
        return BZIP2
    return None


class DecompressionSettings(BaseModel):
    """The deployment's rules for compressed sources."""

    model_config = ConfigDict(frozen=True)

    #: Decompress compressed sources; when off, compressed data is refused with what to do.
    enabled: bool = True
    #: The most the data may expand, decompressed bytes per compressed byte read (0: no limit).
    #: Checked once the output passes ``ratio_grace_bytes``, so small, mostly empty images pass.
    max_ratio: float = Field(default=1000, ge=0)
    ratio_grace_bytes: int = Field(default=256 * MiB, ge=0)
    #: What an xz stream's decoder may use (its dictionary): xz -9 needs 65 MiB.
    xz_memory_limit_bytes: int = Field(default=512 * MiB, gt=0)
    #: The largest zstd window accepted (zstd --long=31 needs 2 GiB; levels up to 19 need 8 MiB).
    zstd_max_window_bytes: int = Field(default=128 * MiB, gt=0)
    #: Size of the decompressed chunks handed on.
    chunk_size: int = Field(default=8 * MiB, gt=0)


class _Decoder(Protocol):
    """One compressed stream (gzip member, xz stream, bzip2 stream, zstd frame)."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        """At most ``max_length`` bytes of output; unconsumed input is kept for the next call."""
        ...

    def has_pending(self) -> bool:
        """Whether output may still come without more input."""
        ...


class _StdlibDecoder:
    """lzma's and bz2's decompressors: bounded output, ``needs_input`` says when to feed."""

    def __init__(self, decompressor: Any) -> None:
        self._d = decompressor

    @property
    def eof(self) -> bool:
        return bool(self._d.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._d.unused_data)

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        return bytes(self._d.decompress(data, max_length))

    def has_pending(self) -> bool:
        return not self._d.needs_input


class _GzipDecoder:
    """zlib with gzip framing: bounded output, unconsumed input given back as ``unconsumed_tail``."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._tail = b""
        self._full = False  # the last call filled max_length: inflate may hold more output

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        if self._tail:
            data = self._tail + bytes(data) if len(data) else self._tail
        out = self._d.decompress(data, max_length)
        self._tail = self._d.unconsumed_tail
        self._full = len(out) >= max_length
        return out

    def has_pending(self) -> bool:
        return bool(self._tail) or (self._full and not self._d.eof)


class _ZstdDecoder:
    """One zstd frame; input is fed in small pieces so that the output stays bounded."""

    def __init__(self, max_window: int) -> None:
        import zstandard  # only when a zstd source is seen: the others need no third-party code

        self._d = zstandard.ZstdDecompressor(max_window_size=max_window).decompressobj()
        self._pending = memoryview(b"")

    @property
    def eof(self) -> bool:
        return bool(self._d.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._d.unused_data) + bytes(self._pending) if self._d.eof else b""

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        if len(data):
            self._pending = (
                memoryview(bytes(self._pending) + bytes(data)) if self._pending else memoryview(data)
            )
        out: list[bytes] = []
        size = 0
        while self._pending and size < max_length and not self._d.eof:
            piece, self._pending = self._pending[:_ZSTD_INPUT_PIECE], self._pending[_ZSTD_INPUT_PIECE:]
            produced = self._d.decompress(bytes(piece))
            if produced:
                out.append(produced)
                size += len(produced)
        return b"".join(out)

    def has_pending(self) -> bool:
        return bool(self._pending) and not self._d.eof


def _decoder_factory(compression: str, settings: DecompressionSettings) -> Callable[[], _Decoder]:
    if compression == GZIP:
        return _GzipDecoder
    if compression == XZ:
        return lambda: _StdlibDecoder(
            lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=settings.xz_memory_limit_bytes)
        )
    if compression == BZIP2:
        return lambda: _StdlibDecoder(bz2.BZ2Decompressor())
    return lambda: _ZstdDecoder(settings.zstd_max_window_bytes)


class DecompressedSource:
    """The image data of a source: decompressed if it is compressed, as it is otherwise.

    Iterate for the chunks. ``compression`` is known (and ``None`` for plain data) once the first
    chunk has been read; ``compressed_bytes`` counts what was read from the source."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        settings: DecompressionSettings | None = None,
        *,
        max_output_bytes: int | None = None,
        keep_compressed: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._source = iter(chunks)
        self._settings = settings or DecompressionSettings()
        self._max_output = max_output_bytes
        self._keep_compressed = keep_compressed
        self.compression: str | None = None
        self.compressed_bytes = 0
        self.output_bytes = 0

    def __iter__(self) -> Iterator[bytes]:
        head, rest = self._head()
        self.compression = None if self._keep_compressed else detect_compression(head)
        if self.compression is None:
            if head:
                yield head
            yield from rest
            return
        if not self._settings.enabled:
            raise ImageRejected(
                f"The image data is {self.compression}-compressed, and this cloud does not decompress "
                "imports: decompress it and import the disk image itself."
            )
        yield from self._batched(self._decompressed(head, rest))

    def _head(self) -> tuple[bytes, Iterator[bytes]]:
        """The first chunk, grown to at least MAGIC_LENGTH bytes unless the data is shorter."""
        head = b""
        for chunk in self._source:
            head += chunk
            if len(head) >= MAGIC_LENGTH:
                break
        return head, self._source

    def _input(self, head: bytes, rest: Iterator[bytes]) -> Iterator[memoryview]:
        yield from self._pieces(head)
        for chunk in rest:
            yield from self._pieces(chunk)

    def _pieces(self, chunk: bytes) -> Iterator[memoryview]:
        view = memoryview(chunk)
        for start in range(0, len(view), _INPUT_PIECE):
            piece = view[start : start + _INPUT_PIECE]
            self.compressed_bytes += len(piece)
            yield piece

    def _decompressed(self, head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
        assert self.compression is not None
        compression = self.compression
        new_decoder = _decoder_factory(compression, self._settings)
        source = self._input(head, rest)
        decoder = new_decoder()
        streams = 1
        out_size = self._settings.chunk_size
        while True:
            if decoder.eof:
                # A stream ended: the data ends here, or another stream follows (pigz, pbzip2 and
                # zstd -T write several; `cat a.gz b.gz` is one valid gzip file).
                data: bytes | memoryview = decoder.unused_data or next(source, b"")
                if compression == XZ:
                    data = self._after_xz_padding(data, source, streams)
                if not len(data):
                    return
                decoder = new_decoder()
                streams += 1
            elif decoder.has_pending():
                data = b""
            else:
                data = next(source, b"")
                if not len(data):
                    raise self._truncated(streams)
            try:
                out = decoder.decompress(data, out_size)
            except (zlib.error, lzma.LZMAError, OSError, ValueError, EOFError) as err:
                raise self._invalid(err, streams) from err
            except Exception as err:  # zstandard.ZstdError, without importing zstandard here
                if type(err).__name__ != "ZstdError":
                    raise
                raise self._invalid(err, streams) from err
            if out:
                self._count(len(out))
                yield out

    def _after_xz_padding(
        self, data: bytes | memoryview, source: Iterator[memoryview], streams: int
    ) -> bytes | memoryview:
        """The data after an xz stream's padding (null bytes, a multiple of four, that the xz format
        allows after a stream: before the next one or at the end); CompressedSourceInvalid when the
        padding is not a multiple of four, as `xz -t` says."""
        padding = 0
        while True:
            raw = bytes(data)
            stripped = raw.lstrip(b"\0")
            padding += len(raw) - len(stripped)
            if stripped:
                data = stripped
                break
            data = next(source, b"")
            if not len(data):
                break
        if padding % 4:
            raise CompressedSourceInvalid(
                f"The xz-compressed image source has {padding} bytes of stream padding after stream "
                f"{streams}; the xz format allows a multiple of four. Check it with 'xz -t' and import "
                "it again."
            )
        return data

    def _count(self, size: int) -> None:
        self.output_bytes += size
        limit = self._max_output
        if limit is not None and self.output_bytes > limit:
            raise ImageTooLarge(
                f"The compressed source expands to more than {_human(limit)}, this cloud's limit for "
                f"an image ({self.output_bytes} bytes from {self.compressed_bytes} {self.compression}-"
                "compressed bytes so far)."
            )
        max_ratio = self._settings.max_ratio
        if (
            max_ratio
            and self.output_bytes > self._settings.ratio_grace_bytes
            and self.output_bytes > max_ratio * self.compressed_bytes
        ):
            raise ImageTooLarge(
                f"The compressed source expands more than {max_ratio:g} times ({self.output_bytes} bytes "
                f"from {self.compressed_bytes} {self.compression}-compressed bytes so far), this cloud's "
                "limit for compressed data: it is refused as a decompression bomb. If it is a real, "
                "mostly empty disk, import it uncompressed or as qcow2 (which does not store empty "
                "blocks)."
            )

    def _truncated(self, streams: int) -> CompressedSourceInvalid:
        compression = self.compression or ""
        problem = (
            f"has data after its compressed stream that is not a complete {compression} stream"
            if streams > 1
            else "ends before the end of its compressed data: the file is truncated"
        )
        return CompressedSourceInvalid(
            f"The {compression}-compressed image source {problem} (after {self.compressed_bytes} "
            f"compressed bytes). Check it with '{_TOOLS[compression]} -t' and import it again."
        )

    def _invalid(self, err: Exception, streams: int) -> CompressedSourceInvalid:
        compression = self.compression or ""
        detail = str(err) or type(err).__name__
        if "memory" in detail.lower():
            limit = (
                self._settings.xz_memory_limit_bytes
                if compression == XZ
                else self._settings.zstd_max_window_bytes
            )
            return CompressedSourceInvalid(
                f"The {compression}-compressed image source needs more memory to decompress than this "
                f"cloud's limit of {_human(limit)} ({detail}): compress it again with the default "
                f"settings of {_TOOLS[compression]} (no --long or custom dictionary size)."
            )
        if streams > 1:
            problem = f"has data after its compressed stream that is not another {compression} stream"
        else:
            problem = "is corrupt"
        return CompressedSourceInvalid(
            f"The {compression}-compressed image source {problem}: it could not be decompressed after "
            f"{self.compressed_bytes} compressed bytes ({detail}). Check it with "
            f"'{_TOOLS[compression]} -t' and import it again."
        )

    def _batched(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """Cut the decoder's output into chunks of ``chunk_size``: each chunk costs the hashing and
        inspection that follow a fixed overhead, and a zstd piece may be far larger."""
        chunk_size = self._settings.chunk_size
        pending: list[bytes] = []
        pending_size = 0
        handed_on = self._clock()
        for piece in pieces:
            pending.append(piece)
            pending_size += len(piece)
            now = self._clock()
            if pending_size < chunk_size:
                if now - handed_on >= FLUSH_SECONDS and pending_size:
                    # A slow source: what is decompressed is handed on anyway, so the task's
                    # progress moves (and its step learns of a cancel) every few seconds.
                    yield b"".join(pending)
                    pending, pending_size, handed_on = [], 0, now
                continue
            handed_on = now
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            full = len(data) - len(data) % chunk_size
            if full == len(data) and full == chunk_size:
                yield data
            else:
                for start in range(0, full, chunk_size):
                    yield data[start : start + chunk_size]
            pending = [data[full:]] if full < len(data) else []
            pending_size = len(data) - full
        if pending:
            yield b"".join(pending)


def _human(size: int) -> str:
    if size >= GiB and size % GiB == 0:
        return f"{size // GiB} GiB"
    if size >= MiB and size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size} bytes"
