"""Compressed import sources through the fetch step: a local HTTP server, S3 uploads on moto."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import boto3
import pytest
import zstandard

from imagetasks import composition
from imagetasks.adapters.http_source import HttpSourceSettings
from imagetasks.config import Settings
from imagetasks.domain.compression import DecompressionSettings
from imagetasks.domain.image_checks import ExpectedChecksums, ImageCheckSettings
from imagetasks.domain.import_errors import ChecksumMismatch, CompressedSourceInvalid, ImageTooLarge
from imagetasks.domain.import_filter import ImportFilterSettings
from imagetasks.services.fetch_and_stage import ImportSettings
from tests.image_corpus import file_digests, make_qcow2, require_qemu_img
from tests.integration.services import test_fetch_and_stage as fetch_tests
from tests.integration.services.test_fetch_and_stage import STAGING, LocalServer, fetch, staged_keys
from tests.integration.services.test_import_steps import stored_import
from tests.support import created_image_id, object_keys

MiB = 1024 * 1024
# The fetch tests' fixtures: a local HTTP server on 127.0.0.1 and S3 on moto.
server = fetch_tests.server
s3 = fetch_tests.s3

COMPRESSORS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": (".gz", gzip.compress),
    "xz": (".xz", lzma.compress),
    "bzip2": (".bz2", bz2.compress),
    "zstd": (".zst", lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data)),
}
FORMATS = sorted(COMPRESSORS)


def compressed_copy(image: Path, compression: str) -> Path:
    suffix, compress = COMPRESSORS[compression]
    out = image.with_name(image.name + suffix)
    out.write_bytes(compress(image.read_bytes()))
    return out


def settings_for(server: LocalServer, **checks: object) -> ImportSettings:
    return ImportSettings(
        filter=ImportFilterSettings(
            allow_loopback=True, allowed_ports=(server.port,), allowed_s3_buckets=("uploads",)
        ),
        checks=ImageCheckSettings(**checks),
        http=HttpSourceSettings(connect_timeout_seconds=2, read_timeout_seconds=2),
        decompression=DecompressionSettings(ratio_grace_bytes=8 * MiB, max_ratio=100),
    )


def staged(s3: object) -> bytes:
    return s3.get_object(Bucket=STAGING, Key="staging/task-1")["Body"].read()  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("compression", FORMATS)
def test_a_compressed_image_over_http_is_staged_decompressed(
    compression: str, server: LocalServer, s3: object, tmp_path: Path
) -> None:
    require_qemu_img()
    # Given a qcow2 image served compressed
    image = make_qcow2(tmp_path)
    source = compressed_copy(image, compression)
    url = server.serve_file(f"/cirros.qcow2{COMPRESSORS[compression][0]}", source)
    # When it is fetched
    result = fetch(url, server, s3, "qcow2", settings=settings_for(server))
    # Then the image inside is what was hashed, inspected and staged
    md5, sha512 = file_digests(image)
    assert (result.checksum, result.os_hash_value, result.size) == (md5, sha512, image.stat().st_size)
    assert (result.detected_format, result.virtual_size) == ("qcow2", MiB)
    assert (result.compression, result.compressed_size) == (compression, source.stat().st_size)
    assert staged(s3) == image.read_bytes()


@pytest.mark.parametrize("compression", FORMATS)
def test_a_compressed_s3_upload_is_staged_decompressed(
    compression: str, server: LocalServer, s3: object, tmp_path: Path
) -> None:
    require_qemu_img()
    image = make_qcow2(tmp_path)
    source = compressed_copy(image, compression)
    key = f"uploads/proj1/{source.name}"
    s3.put_object(Bucket="uploads", Key=key, Body=source.read_bytes())  # type: ignore[attr-defined]

    result = fetch(
        f"s3://uploads/{key}", server, s3, "qcow2", settings=settings_for(server), project_id="proj1"
    )

    assert result.os_hash_value == file_digests(image)[1] and result.compression == compression
    assert staged(s3) == image.read_bytes()


def test_content_encoding_does_not_decompress_twice(server: LocalServer, s3: object, tmp_path: Path) -> None:
    # A server that labels its .gz file "Content-Encoding: gzip" (though asked for identity) still
    # sends the gzip bytes: they are decompressed once, by their magic bytes, not by the header.
    image = (b"\0" * 512 + bytes(range(256)) * 2048)[:MiB]
    body = gzip.compress(image)

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    server.routes["/disk.img"] = route
    result = fetch(server.url("/disk.img"), server, s3, "raw", settings=settings_for(server))
    assert result.compression == "gzip" and staged(s3) == image


def test_a_decompression_bomb_over_http_stops_at_the_size_limit_and_leaves_nothing(
    server: LocalServer, s3: object, tmp_path: Path
) -> None:
    # Given 256 MiB of zeros gzipped to a quarter of a MiB, and a deployment limit of 32 MiB
    bomb = tmp_path / "bomb.img.gz"
    bomb.write_bytes(gzip.compress(b"\0" * (256 * MiB), 1))
    url = server.serve_file("/bomb.img.gz", bomb)
    settings = settings_for(server, max_image_size_bytes=32 * MiB).model_copy(
        update={"decompression": DecompressionSettings(max_ratio=0)}
    )
    # When it is fetched, Then it fails with the limit, and no staged object or upload is left
    with pytest.raises(ImageTooLarge) as refused:
        fetch(url, server, s3, "raw", settings=settings)
    assert refused.value.message.startswith(
        "The compressed source expands to more than 32 MiB, this cloud's limit for an image"
    )
    assert staged_keys(s3) == []


def test_a_decompression_bomb_over_http_stops_at_the_ratio_limit(
    server: LocalServer, s3: object, tmp_path: Path
) -> None:
    bomb = tmp_path / "bomb.img.xz"
    bomb.write_bytes(lzma.compress(b"\0" * (64 * MiB)))
    url = server.serve_file("/bomb.img.xz", bomb)
    with pytest.raises(ImageTooLarge, match="expands more than 100 times"):
        fetch(url, server, s3, "raw", settings=settings_for(server))
    assert staged_keys(s3) == []


def test_a_truncated_compressed_source_fails_saying_so(
    server: LocalServer, s3: object, tmp_path: Path
) -> None:
    require_qemu_img()
    source = compressed_copy(make_qcow2(tmp_path), "gzip")
    cut = tmp_path / "cut.qcow2.gz"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    url = server.serve_file("/cut.qcow2.gz", cut)
    with pytest.raises(CompressedSourceInvalid, match="the file is truncated"):
        fetch(url, server, s3, "qcow2", settings=settings_for(server))
    assert staged_keys(s3) == []


def test_input_checksums_are_compared_with_the_decompressed_image(
    server: LocalServer, s3: object, tmp_path: Path
) -> None:
    require_qemu_img()
    image = make_qcow2(tmp_path)
    source = compressed_copy(image, "xz")
    url = server.serve_file("/disk.qcow2.xz", source)
    md5, sha512 = file_digests(image)
    # The image's checksums pass
    expected = ExpectedChecksums(checksum=md5, os_hash_value=sha512)
    fetch(url, server, s3, "qcow2", settings=settings_for(server), expected=expected)
    # The compressed file's do not, and the message says what they are compared with
    compressed_md5 = hashlib.md5(source.read_bytes(), usedforsecurity=False).hexdigest()
    with pytest.raises(ChecksumMismatch) as mismatch:
        fetch(
            url,
            server,
            s3,
            "qcow2",
            settings=settings_for(server),
            expected=ExpectedChecksums(checksum=compressed_md5),
        )
    assert mismatch.value.message == (
        f"Image data does not match the expected checksum: expected {compressed_md5}, got {md5} "
        "(the source is xz-compressed: checksums are compared with the decompressed image)"
    )


def test_an_uploaded_gzip_qcow2_becomes_an_image_of_the_decompressed_data(
    aws: dict[str, str], tmp_path: Path
) -> None:
    require_qemu_img()
    # Given an upload of a gzip'd qcow2 and its import task, through the deployment's composition
    image = make_qcow2(tmp_path)
    task_id = stored_import(aws, compressed_copy(image, "gzip"))
    steps = composition.import_task(Settings.from_environ())
    # When both steps run
    fetched = steps.fetch(task_id)
    steps.register(task_id, fetched)
    # Then the image is the decompressed qcow2, with its checksums and size
    record = boto3.client("dynamodb").get_item(
        TableName=aws["IMAGES_TABLE"], Key={"id": {"S": created_image_id(task_id)}}
    )["Item"]
    md5, sha512 = file_digests(image)
    assert record["checksum"]["S"] == md5 and record["os_hash_value"]["S"] == sha512
    assert int(record["size"]["N"]) == image.stat().st_size
    stored = boto3.client("s3").get_object(
        Bucket=aws["IMAGES_BUCKET"], Key=f"images/{created_image_id(task_id)}"
    )
    assert stored["Body"].read() == image.read_bytes()
    assert object_keys(aws["STAGING_BUCKET"]) == []
