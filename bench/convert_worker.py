"""One run of the real convert step (``ConversionService.convert``) on in-process moto.

    python -m bench.convert_worker <qcow2 path> <target disk format>

Sets up the template's tables and buckets, stores the qcow2 as an active image, creates a convert
task, and times ``convert`` (download + checks, qemu-img, checks + hashes + multipart upload, the
new image's record). Prints one JSON line.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPOSITORY, peak_rss_mib, print_result


def main(source: Path, target: str) -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from local.template import load_template

    template = load_template(REPOSITORY / "template.yaml")
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        for table in template.tables.values():
            dynamodb.create_table(**table.create_kwargs)
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in template.buckets.values():
            s3.create_bucket(Bucket=bucket.name)
        for key, value in template.functions["ConvertTaskFunction"].environment.items():
            os.environ[key] = str(value)
        from imagetasks.adapters.images_table import ImagesTable
        from imagetasks.adapters.tasks_table import TasksTable
        from imagetasks.composition import conversion_service
        from imagetasks.config import settings
        from imagetasks.domain.images import new_image
        from imagetasks.domain.tasks import TaskType, new_task

        config = settings()
        md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
        with source.open("rb") as f:
            while chunk := f.read(8 << 20):
                md5.update(chunk)
                sha512.update(chunk)
        s3.upload_file(str(source), config.images_bucket, "images/bench-source")
        ImagesTable(config.images_table).create(
            new_image(
                image_id="bench-source",
                owner="bench-project",
                name="bench",
                disk_format="qcow2",
                container_format="bare",
                size=source.stat().st_size,
                virtual_size=None,
                checksum=md5.hexdigest(),
                os_hash_value=sha512.hexdigest(),
                bucket=config.images_bucket,
                key="images/bench-source",
                task_id="bench-import",
            )
        )
        task = new_task(
            TaskType.CONVERT, {"image_id": "bench-source", "disk_format": target}, "bench-project"
        )
        TasksTable(config.tasks_table, config.slots_table).create(task)
        service = conversion_service(config)
        start = time.perf_counter()
        result = service.convert(task.id, 900)
        seconds = time.perf_counter() - start
        image = ImagesTable(config.images_table).get(result["image_id"])
        assert image is not None
    return {"seconds": seconds, "output_bytes": image.size, "peak_rss_mib": peak_rss_mib()}


if __name__ == "__main__":
    print_result(main(Path(sys.argv[1]), sys.argv[2]))
