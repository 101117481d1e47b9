"""One measured run of the import data path, in a fresh interpreter (so peak RSS is this run's).

    python -m bench.import_worker reference <size>
    python -m bench.import_worker null <url> <size> <port>
    python -m bench.import_worker s3 <url> <size> <port>

Prints one JSON line: seconds, bytes, peak RSS (MiB) and the digests.
"""

from __future__ import annotations

import hashlib
import sys
import time
from typing import Any

from bench.common import peak_rss_mib, print_result


def reference(size: int) -> dict[str, Any]:
    """sha512 then md5 over every chunk in one thread: the CPU cost of the two digests."""
    from bench.image_server import block, chunks

    block()  # generated before the clock starts, as the server does
    sha512, md5 = hashlib.sha512(), hashlib.md5(usedforsecurity=False)
    start = time.perf_counter()
    for chunk in chunks(size):
        sha512.update(chunk)
        md5.update(chunk)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes": size, "md5": md5.hexdigest(), "sha512": sha512.hexdigest()}


def settings(port: int) -> Any:
    from imagetasks.domain.import_filter import ImportFilterSettings
    from imagetasks.services.fetch_and_stage import ImportSettings

    return ImportSettings(filter=ImportFilterSettings(allow_loopback=True, allowed_ports=(80, 443, port)))


def null_sink(url: str, port: int) -> dict[str, Any]:
    """``fetch_and_check`` step for step, with the multipart upload replaced by ``NullSink``."""
    from imagetasks.adapters.http_source import HttpSource
    from imagetasks.adapters.staging import NullSink, StreamDigests, hash_to_sink
    from imagetasks.domain.image_checks import ImageChecker, ImageVerdict, check_declared_formats
    from imagetasks.domain.import_filter import ImportFilter

    config = settings(port)
    start = time.perf_counter()
    check_declared_formats("raw", "bare", config.checks)
    import_filter = ImportFilter(config.filter)
    location = import_filter.check_location(url, None)
    checker = ImageChecker(config.checks, "raw", "bare", None)
    verdicts: list[ImageVerdict] = []

    def verify(digests: StreamDigests) -> None:
        verdicts.append(checker.finish(checksum=digests.md5, os_hash_value=digests.sha512))

    with HttpSource(import_filter, config.http).open(location) as source:  # type: ignore[arg-type]
        checker.check_announced_size(source.content_length)
        digests = hash_to_sink(
            source, NullSink(), part_size=config.part_size, observers=[checker], before_complete=verify
        )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "bytes": digests.size,
        "md5": digests.md5,
        "sha512": digests.sha512,
        "detected_format": verdicts[0].detected_format,
    }


def s3(url: str, port: int) -> dict[str, Any]:
    """The real ``fetch_and_check`` into an S3 bucket of an in-process moto."""
    import boto3
    from moto import mock_aws

    from imagetasks.services.fetch_and_stage import fetch_and_check

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="staging")
        start = time.perf_counter()
        result = fetch_and_check(
            url, "raw", "bare", None, "staging", "bench/image", settings=settings(port), s3_client=client
        )
        seconds = time.perf_counter() - start
        head = client.head_object(Bucket="staging", Key="bench/image")
        parts = int(str(head.get("ETag", "")).strip('"').rpartition("-")[2] or 1)
    return {
        "seconds": seconds,
        "bytes": result.size,
        "md5": result.checksum,
        "sha512": result.os_hash_value,
        "detected_format": result.detected_format,
        "stored_bytes": head["ContentLength"],
        "parts": parts,
    }


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "reference":
        result = reference(int(argv[1]))
    elif mode == "null":
        result = null_sink(argv[1], int(argv[3]))
    elif mode == "s3":
        result = s3(argv[1], int(argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    result["peak_rss_mib"] = peak_rss_mib()
    print_result(result)


if __name__ == "__main__":
    main(sys.argv[1:])
