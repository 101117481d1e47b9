"""S3 operations on moto whose answers must not change with local/moto_fixes.py.

``python -m tests.local.moto_s3_scenario plain|patched`` runs them in-process (botocore's
stubber) and through moto's server over HTTP, and prints what the clients saw as JSON: ETags,
checksums, content types, metadata, ranges, and whether each body held the expected bytes.
test_moto_fixes.py runs it once with and once without the fixes and compares the two.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from typing import Any

MiB = 1024 * 1024
BUCKET = "scenario-bucket"
PART_SIZES = (6 * MiB, 5 * MiB + 3, 1234)  # above moto's in-memory limit, then a short last part


def data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _picked(response: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k.startswith(prefixes)}


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def scenario(s3: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    s3.create_bucket(Bucket=BUCKET)
    whole = b"".join(data(size, n) for n, size in enumerate(PART_SIZES, start=1))
    for algorithm in (None, "CRC32", "SHA256", "SHA1"):
        extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        key = f"multipart-{algorithm}"
        upload = s3.create_multipart_upload(
            Bucket=BUCKET, Key=key, ContentType="application/x-test", Metadata={"name": "v"}, **extra
        )
        parts = []
        for number, size in enumerate(PART_SIZES, start=1):
            answer = s3.upload_part(
                Bucket=BUCKET,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data(size, number),
                **extra,
            )
            part = {"ETag": answer["ETag"], "PartNumber": number}
            if algorithm:
                part[f"Checksum{algorithm}"] = answer[f"Checksum{algorithm}"]
            parts.append(part)
        done = s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )
        got = s3.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        case: dict[str, Any] = {
            "complete": _picked(done, ("ETag", "Checksum")),
            "get": _picked(got, ("ETag", "Checksum", "Content", "Metadata", "AcceptRanges")),
            "bytes": got["Body"].read() == whole,
        }
        ranged = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=100-6291555")
        case["range"] = [
            _digest(ranged["Body"].read()) == _digest(whole[100:6291556]),
            _picked(ranged, ("Content", "ETag", "Checksum")),
        ]
        suffix = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=-5000")
        case["suffix"] = [suffix["Body"].read() == whole[-5000:], suffix["ContentRange"]]
        head = s3.head_object(Bucket=BUCKET, Key=key, PartNumber=2)
        case["head_part"] = _picked(head, ("Content", "ETag", "PartsCount"))
        s3.copy_object(Bucket=BUCKET, Key=key + "-copy", CopySource={"Bucket": BUCKET, "Key": key})
        copied = s3.get_object(Bucket=BUCKET, Key=key + "-copy")
        case["copy"] = [copied["Body"].read() == whole, _picked(copied, ("ETag", "Content", "Metadata"))]
        s3.copy_object(
            Bucket=BUCKET,
            Key=key,
            CopySource={"Bucket": BUCKET, "Key": key},
            MetadataDirective="REPLACE",
            ContentType="application/octet-stream",
        )
        in_place = s3.get_object(Bucket=BUCKET, Key=key)
        case["copy_in_place"] = [in_place["Body"].read() == whole, _picked(in_place, ("ETag", "Content"))]
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key + "-parts")
        first = s3.upload_part_copy(
            Bucket=BUCKET,
            Key=key + "-parts",
            UploadId=upload["UploadId"],
            PartNumber=1,
            CopySource={"Bucket": BUCKET, "Key": key},
            CopySourceRange="bytes=0-5242879",
        )
        second = s3.upload_part_copy(
            Bucket=BUCKET,
            Key=key + "-parts",
            UploadId=upload["UploadId"],
            PartNumber=2,
            CopySource={"Bucket": BUCKET, "Key": key},
            CopySourceRange=f"bytes=5242880-{len(whole) + 10}",  # past the end: up to the end
        )
        etags = [first["CopyPartResult"]["ETag"], second["CopyPartResult"]["ETag"]]
        done = s3.complete_multipart_upload(
            Bucket=BUCKET,
            Key=key + "-parts",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
        )
        assembled = s3.get_object(Bucket=BUCKET, Key=key + "-parts")
        case["part_copy"] = [assembled["Body"].read() == whole, etags, done["ETag"]]
        out[key] = case
    s3.put_object(Bucket=BUCKET, Key="small", Body=b"hello world")
    out["small"] = [
        s3.get_object(Bucket=BUCKET, Key="small")["Body"].read().decode(),
        s3.get_object(Bucket=BUCKET, Key="small", Range="bytes=1-3")["Body"].read().decode(),
    ]
    large = data(7 * MiB, 9)
    s3.put_object(Bucket=BUCKET, Key="large", Body=large, ContentType="image/x")
    got = s3.get_object(Bucket=BUCKET, Key="large")
    out["large"] = [got["Body"].read() == large, _picked(got, ("ETag", "Content"))]
    return out


def main(mode: str) -> None:
    import boto3
    from botocore.config import Config
    from moto import mock_aws
    from moto.server import ThreadedMotoServer

    if mode == "patched":
        from local.moto_fixes import local_moto_fixes

        local_moto_fixes()
    # moto answers a copied multipart object's composite checksum without its "-N": botocore would
    # refuse it either way, so responses are not validated here (the values are compared instead).
    config = Config(response_checksum_validation="when_required")
    results: dict[str, Any] = {}
    with mock_aws():
        results["in_process"] = scenario(boto3.client("s3", region_name="us-east-1", config=config))
    with mock_aws():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            client = boto3.client(
                "s3", region_name="us-east-1", endpoint_url=f"http://{host}:{port}", config=config
            )
            results["http"] = scenario(client)
        finally:
            server.stop()
    print(json.dumps(results, sort_keys=True, default=str))


if __name__ == "__main__":
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    main(sys.argv[1])
