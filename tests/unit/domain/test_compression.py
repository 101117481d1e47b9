"""The streaming decompressor: each format, multi-stream files, bombs, truncated and corrupt data."""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
from collections.abc import Callable, Iterator

import pytest
import zstandard

from imagetasks.domain.compression import (
    BZIP2,
    GZIP,
    DecompressedSource,
    DecompressionSettings,
    detect_compression,
)
from imagetasks.domain.import_errors import (
    CompressedSourceInvalid,
    ImageRejected,
    ImageTooLarge,
    TransientSourceError,
)

MiB = 1024 * 1024


def zstd(data: bytes) -> bytes:
    # The zstd tool writes a checksum by default; python-zstandard only when asked.
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "xz": lambda data: lzma.compress(data, format=lzma.FORMAT_XZ),
    "bzip2": bz2.compress,
    "zstd": zstd,
}
FORMATS = sorted(COMPRESSORS)


def image_data(size: int = 3 * MiB) -> bytes:
    """Something like a disk: random-looking blocks between runs of zeros. The same bytes every run
    (a fixed seed): a byte flipped in random data could read as another fault in one run of many."""
    return (random.Random(20261207).randbytes(256 * 1024) + b"\0" * (768 * 1024)) * (size // MiB)


def in_chunks(data: bytes, size: int = 1000 * 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def decompress_all(data: bytes, settings: DecompressionSettings | None = None, **kw: object) -> bytes:
    return b"".join(DecompressedSource(in_chunks(data), settings, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", FORMATS)
def test_each_format_is_recognised_and_decompressed(compression: str) -> None:
    # Given an image compressed with one of the formats, arriving in chunks
    image = image_data()
    compressed = COMPRESSORS[compression](image)
    source = DecompressedSource(in_chunks(compressed), DecompressionSettings(chunk_size=MiB))
    # When it streams through the decompressor
    chunks = list(source)
    # Then the image comes out, in bounded chunks, and the source is described
    assert b"".join(chunks) == image
    assert max(len(chunk) for chunk in chunks) == MiB
    assert source.compression == compression
    assert source.compressed_bytes == len(compressed)
    assert source.output_bytes == len(image)


@pytest.mark.parametrize("compression", FORMATS)
def test_several_streams_one_after_the_other_are_one_image(compression: str) -> None:
    # pigz, pbzip2, zstd -T and `cat a.gz b.gz` write several streams into one file
    first, second = image_data(MiB), image_data(2 * MiB)
    compress = COMPRESSORS[compression]
    assert decompress_all(compress(first) + compress(second)) == first + second


def test_plain_data_passes_untouched() -> None:
    image = image_data()
    source = DecompressedSource(in_chunks(image))
    assert b"".join(source) == image
    assert source.compression is None


def test_data_shorter_than_any_magic_passes_untouched() -> None:
    assert decompress_all(b"\x1f\x8b") == b"\x1f\x8b"
    assert decompress_all(b"") == b""


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"\xfd7zXZ\x00\x00", "xz"),
        (b"BZh91AY&SY", "bzip2"),
        (b"BZh9\x17rE8P\x90", "bzip2"),  # an empty bzip2 stream
        (b"\x28\xb5\x2f\xfd\x00", "zstd"),
        (b"BZh is the start of a text file", None),
        (b"QFI\xfb\x00\x00\x00\x03", None),  # qcow2
        (b"\x1f\x8b\x07", None),  # not deflate: gzip defines no other method
        (b"\0" * 16, None),
    ],
)
def test_compression_is_recognised_by_the_first_bytes(head: bytes, expected: str | None) -> None:
    assert detect_compression(head) == expected


def test_the_magic_bytes_are_found_across_tiny_first_chunks() -> None:
    image = image_data(MiB)
    compressed = lzma.compress(image)
    assert b"".join(DecompressedSource(in_chunks(compressed, 3))) == image


def test_container_format_compressed_keeps_the_data_as_it_is() -> None:
    compressed = gzip.compress(image_data(MiB))
    source = DecompressedSource(in_chunks(compressed), keep_compressed=True)
    assert b"".join(source) == compressed
    assert source.compression is None


def test_when_decompression_is_switched_off_compressed_data_is_refused() -> None:
    with pytest.raises(ImageRejected) as refused:
        decompress_all(gzip.compress(image_data(MiB)), DecompressionSettings(enabled=False))
    assert refused.value.message == (
        "The image data is gzip-compressed, and this cloud does not decompress imports: "
        "decompress it and import the disk image itself."
    )


@pytest.mark.parametrize("compression", FORMATS)
def test_a_bomb_is_stopped_at_the_size_limit_while_it_streams(compression: str) -> None:
    # Given 64 MiB of zeros compressed to a few KiB, and a 16 MiB limit on an image
    bomb = COMPRESSORS[compression](b"\0" * (64 * MiB))
    settings = DecompressionSettings(max_ratio=0, chunk_size=MiB)
    produced = 0
    # When it streams, Then it fails before much more than the limit has come out
    with pytest.raises(ImageTooLarge) as refused:
        for chunk in DecompressedSource(in_chunks(bomb), settings, max_output_bytes=16 * MiB):
            produced += len(chunk)
    assert produced <= 16 * MiB
    assert refused.value.message.startswith(
        "The compressed source expands to more than 16 MiB, this cloud's limit for an image ("
    )
    assert f"{compression}-compressed bytes so far" in refused.value.message


@pytest.mark.parametrize("compression", FORMATS)
def test_a_bomb_is_stopped_by_the_ratio_limit(compression: str) -> None:
    # Given zeros compressed far more than a disk image ever is
    bomb = COMPRESSORS[compression](b"\0" * (64 * MiB))
    settings = DecompressionSettings(max_ratio=100, ratio_grace_bytes=8 * MiB, chunk_size=MiB)
    # When it streams, Then it fails once past the grace size, saying why and what to do instead
    with pytest.raises(ImageTooLarge) as refused:
        decompress_all(bomb, settings)
    message = refused.value.message
    assert message.startswith("The compressed source expands more than 100 times (")
    assert "refused as a decompression bomb" in message and "as qcow2" in message


def test_a_well_compressed_image_passes_the_ratio_limit() -> None:
    image = image_data(8 * MiB)  # compresses about 4:1
    settings = DecompressionSettings(max_ratio=10, ratio_grace_bytes=MiB)
    assert decompress_all(gzip.compress(image), settings) == image


def test_small_images_pass_whatever_their_ratio() -> None:
    empty_disk = b"\0" * (16 * MiB)
    assert decompress_all(lzma.compress(empty_disk)) == empty_disk


@pytest.mark.parametrize("compression", FORMATS)
def test_a_truncated_stream_says_so(compression: str) -> None:
    compressed = COMPRESSORS[compression](image_data())
    with pytest.raises(CompressedSourceInvalid) as refused:
        decompress_all(compressed[: len(compressed) // 2])
    assert refused.value.message == (
        f"The {compression}-compressed image source ends before the end of its compressed data: the "
        f"file is truncated (after {len(compressed) // 2} compressed bytes). Check it with "
        f"'{compression} -t' and import it again."
    )


@pytest.mark.parametrize("compression", FORMATS)
def test_a_corrupt_stream_says_so(compression: str) -> None:
    compressed = bytearray(COMPRESSORS[compression](image_data()))
    compressed[len(compressed) // 3] ^= 0xFF
    with pytest.raises(CompressedSourceInvalid) as refused:
        decompress_all(bytes(compressed))
    message = refused.value.message
    assert message.startswith(f"The {compression}-compressed image source is corrupt: ")
    assert message.endswith(f"Check it with '{compression} -t' and import it again.")


@pytest.mark.parametrize("compression", FORMATS)
def test_garbage_after_the_stream_is_refused(compression: str) -> None:
    compressed = COMPRESSORS[compression](image_data(MiB))
    with pytest.raises(CompressedSourceInvalid, match="has data after its compressed stream that is not"):
        decompress_all(compressed + b"this is not compressed data at all")


def test_an_xz_stream_needing_more_memory_than_the_limit_is_refused_with_advice() -> None:
    compressed = lzma.compress(image_data(MiB), preset=9)  # a 64 MiB dictionary
    settings = DecompressionSettings(xz_memory_limit_bytes=16 * MiB)
    with pytest.raises(CompressedSourceInvalid) as refused:
        decompress_all(compressed, settings)
    assert refused.value.message.startswith(
        "The xz-compressed image source needs more memory to decompress than this cloud's limit of 16 MiB"
    )


def test_a_zstd_window_over_the_limit_is_refused_with_advice() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(19, window_log=25)  # 32 MiB window
    # Streamed, so that the frame cannot say its (small) size and keeps the whole window.
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    compressed = stream.compress(image_data(MiB)) + stream.flush()
    settings = DecompressionSettings(zstd_max_window_bytes=8 * MiB)
    with pytest.raises(CompressedSourceInvalid) as refused:
        decompress_all(compressed, settings)
    assert refused.value.message.startswith(
        "The zstd-compressed image source needs more memory to decompress than this cloud's limit of 8 MiB"
    )


@pytest.mark.parametrize("compression", FORMATS)
def test_errors_of_the_source_pass_through_unchanged(compression: str) -> None:
    # A source that breaks off is retried by the workflow: the decompressor must not hide that.
    compressed = COMPRESSORS[compression](image_data())

    def breaking() -> Iterator[bytes]:
        yield compressed[: len(compressed) // 2]
        raise TransientSourceError("The image source broke off")

    with pytest.raises(TransientSourceError):
        b"".join(DecompressedSource(breaking()))


@pytest.mark.parametrize(
    ("layout", "padding"),
    [
        ("end", 4),
        ("end", 4096),
        ("between", 8),
        ("between-and-end", 12),
        ("end-across-chunks", 1000 * 1000 + 4),  # the padding spans input chunks
    ],
)
def test_xz_stream_padding_is_part_of_a_valid_file(layout: str, padding: int) -> None:
    # The xz format lets null bytes (a multiple of four) follow a stream; `xz -t` accepts them
    first, second = image_data(MiB), image_data(MiB)
    pad = b"\0" * padding
    if layout.startswith("end"):
        data, expected = lzma.compress(first) + pad, first
    elif layout == "between":
        data, expected = lzma.compress(first) + pad + lzma.compress(second), first + second
    else:
        data, expected = lzma.compress(first) + pad + lzma.compress(second) + pad, first + second
    assert decompress_all(data) == expected


@pytest.mark.parametrize("padding", [1, 3, 5, 4097])
def test_xz_stream_padding_that_is_not_a_multiple_of_four_is_refused(padding: int) -> None:
    data = lzma.compress(image_data(MiB)) + b"\0" * padding
    with pytest.raises(CompressedSourceInvalid, match=f"{padding} bytes of stream padding"):
        decompress_all(data)


@pytest.mark.parametrize("compression", [GZIP, BZIP2])
def test_null_bytes_after_a_stream_of_another_format_are_still_refused(compression: str) -> None:
    data = COMPRESSORS[compression](image_data(MiB)) + b"\0" * 4
    with pytest.raises(CompressedSourceInvalid):
        decompress_all(data)
