"""Section 1, the import data path: a local HTTP server → fetch, checks, hashes → null sink / S3.

Each run is a fresh interpreter (``bench.import_worker``), so its peak RSS is that run's alone. The
reference (sha512 + md5 in one thread over the same bytes) runs alternately with the pipeline, so
both see the same noise from the shared machine.
"""

from __future__ import annotations

from typing import Any

from bench.common import GiB, MiB, fmt, run_worker, say, summary, verdict
from bench.image_server import ImageServer

TARGET_RATIO = 0.8
RSS_LIMIT_MIB = 200.0


def _plan(quick: bool) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(size, runs) for the null sink and the reference; (size, runs) for the S3 case."""
    if quick:
        return [(256 * MiB, 3)], [(64 * MiB, 1)]
    # S3 through moto: ~17 MB/s and ~6.5x the image in RSS (moto keeps every part in memory and
    # joins them on completion), so 4 GiB would need ~27 GiB of RAM; 1 GiB is the largest run.
    return [(1 * GiB, 5), (4 * GiB, 3)], [(1 * GiB, 3)]


def _size_name(size: int) -> str:
    return f"{size // GiB} GiB" if size >= GiB else f"{size // MiB} MiB"


def run(quick: bool) -> dict[str, Any]:
    null_plan, s3_plan = _plan(quick)
    cases: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    with ImageServer() as server:
        for size, runs in null_plan:
            reference: list[dict[str, Any]] = []
            null: list[dict[str, Any]] = []
            for _ in range(runs):
                reference.append(run_worker("bench.import_worker", ["reference", str(size)]))
                null.append(
                    run_worker("bench.import_worker", ["null", server.url(size), str(size), str(server.port)])
                )
            if {r["sha512"] for r in reference} != {r["sha512"] for r in null}:
                raise RuntimeError("the pipeline and the reference hashed different bytes")
            ref_mbps = summary([size / r["seconds"] / MiB for r in reference])
            null_mbps = summary([size / r["seconds"] / MiB for r in null])
            rss = summary([r["peak_rss_mib"] for r in null])
            ratio = null_mbps["median"] / ref_mbps["median"]
            # The ratio of each run against the reference run right before it, for the spread.
            paired = summary([r["seconds"] / n["seconds"] for r, n in zip(reference, null, strict=True)])
            name = _size_name(size)
            cases.append(
                {
                    "sink": "null",
                    "size_bytes": size,
                    "pipeline_mib_per_s": null_mbps,
                    "reference_mib_per_s": ref_mbps,
                    "ratio": ratio,
                    "paired_ratio": paired,
                    "peak_rss_mib": rss,
                    "reference_peak_rss_mib": summary([r["peak_rss_mib"] for r in reference]),
                }
            )
            say(
                f"  null sink {name}: pipeline {fmt(null_mbps, ' MiB/s')}, "
                f"reference {fmt(ref_mbps, ' MiB/s')}"
            )
            say(f"  null sink {name}: per-run ratio {fmt(paired, '', 3)}")
            targets.append(
                verdict(
                    f"null-sink throughput, {name}",
                    fmt(null_mbps, " MiB/s"),
                    f"sha512+md5 in one thread {fmt(ref_mbps, ' MiB/s')}",
                    ratio,
                    f">= {TARGET_RATIO}x reference",
                    ratio >= TARGET_RATIO,
                )
            )
            targets.append(
                verdict(
                    f"null-sink peak RSS, {name}",
                    fmt(rss, " MiB", 1),
                    f"limit {RSS_LIMIT_MIB:.0f} MiB",
                    rss["max"] / RSS_LIMIT_MIB,
                    f"< {RSS_LIMIT_MIB:.0f} MiB (worst run)",
                    rss["max"] < RSS_LIMIT_MIB,
                )
            )
        for size, runs in s3_plan:
            s3 = [
                run_worker("bench.import_worker", ["s3", server.url(size), str(size), str(server.port)])
                for _ in range(runs)
            ]
            s3_mbps = summary([size / r["seconds"] / MiB for r in s3])
            rss = summary([r["peak_rss_mib"] for r in s3])
            name = _size_name(size)
            cases.append(
                {
                    "sink": "s3 (in-process moto.mock_aws)",
                    "size_bytes": size,
                    "pipeline_mib_per_s": s3_mbps,
                    "peak_rss_mib_including_moto": rss,
                    "parts": s3[0]["parts"],
                    "stored_bytes": s3[0]["stored_bytes"],
                }
            )
            say(
                f"  S3 (moto) {name}: {fmt(s3_mbps, ' MiB/s')}, peak RSS incl. moto {fmt(rss, ' MiB', 0)}, "
                f"{s3[0]['parts']} parts (informational: moto's speed and memory, no target)"
            )
    return {
        "cases": cases,
        "targets": targets,
        "notes": [
            "Image bytes: a pseudo-random 64 MiB block repeated, generated on the fly by a local HTTP "
            "server (no disk, no page cache).",
            "Null sink = fetch_and_check's steps (filter, HttpSource, ImageChecker, hash_to_sink) with "
            "NullSink instead of S3MultipartSink.",
            "S3 case: the real fetch_and_check into an in-process moto.mock_aws bucket (the backend "
            "the local stack uses), without the moto HTTP server. moto runs at ~17 MB/s and holds "
            "every part in memory, so its RSS is moto's, not ours; 4 GiB into moto would need about "
            "27 GiB RAM and was not run (the 4 GiB figure is the null sink only).",
        ],
    }
