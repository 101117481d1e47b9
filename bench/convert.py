"""Section 2, conversion: our convert step against bare ``qemu-img convert`` on the same qcow2.

Three measurements, interleaved: bare ``qemu-img convert -f qcow2 -O raw``; the same conversion
through our adapter (``QemuImg.convert``, the call the convert step makes); and the whole convert
step (``ConversionService.convert``: read the image from S3 with the safety checks, qemu-img,
inspect + hash + multipart upload, the new image's record) on in-process moto, in a fresh process.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import WORK, GiB, MiB, fmt, run_worker, say, summary, verdict

TARGET_OVERHEAD = 0.05
TARGET = "raw"


def _source(size: int) -> Path:
    """A qcow2 of ``size`` bytes of random-looking data, made once and reused."""
    from bench.image_server import chunks

    WORK.mkdir(parents=True, exist_ok=True)
    qcow2 = WORK / f"convert-{size // MiB}m.qcow2"
    if qcow2.exists():
        return qcow2
    raw = WORK / f"convert-{size // MiB}m.raw"
    with raw.open("wb") as f:
        for piece in chunks(size):
            f.write(piece)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    raw.unlink()
    return qcow2


def _bare(source: Path, output: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", TARGET, str(source), str(output)],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    output.unlink()
    return seconds


def _adapter(source: Path, output: Path) -> float:
    from imagetasks.adapters.qemu import QemuImg
    from imagetasks.domain.conversion import SOURCE_FORMATS, TARGET_FORMATS, TARGET_OPTIONS

    qemu = QemuImg()
    start = time.perf_counter()
    qemu.convert(
        source, SOURCE_FORMATS["qcow2"], output, TARGET_FORMATS[TARGET], 900, TARGET_OPTIONS.get(TARGET, ())
    )
    seconds = time.perf_counter() - start
    output.unlink()
    return seconds


def run(quick: bool) -> dict[str, Any]:
    size = 256 * MiB if quick else 1 * GiB
    runs = 2 if quick else 5
    full_runs = 1 if quick else 3
    source = _source(size)
    output = WORK / "convert-output.raw"
    bare: list[float] = []
    adapter: list[float] = []
    full: list[dict[str, Any]] = []
    for n in range(runs):
        bare.append(_bare(source, output))
        adapter.append(_adapter(source, output))
        if n < full_runs:
            full.append(run_worker("bench.convert_worker", [str(source), TARGET]))
    bare_s, adapter_s = summary(bare), summary(adapter)
    full_s = summary([r["seconds"] for r in full])
    name = f"{size // MiB} MiB" if size < GiB else f"{size // GiB} GiB"
    say(
        f"  bare qemu-img {fmt(bare_s, ' s')}, adapter {fmt(adapter_s, ' s')}, whole step {fmt(full_s, ' s')}"
    )
    adapter_ratio = adapter_s["median"] / bare_s["median"]
    full_ratio = full_s["median"] / bare_s["median"]
    targets = [
        verdict(
            f"qemu-img through our adapter, {name} qcow2 → {TARGET}",
            fmt(adapter_s, " s"),
            f"bare qemu-img convert {fmt(bare_s, ' s')}",
            adapter_ratio,
            f"overhead <= {TARGET_OVERHEAD:.0%}",
            adapter_ratio <= 1 + TARGET_OVERHEAD,
        ),
        verdict(
            f"whole convert step on moto (S3 in and out, checks, hashes), {name} qcow2 → {TARGET}",
            fmt(full_s, " s"),
            f"bare qemu-img convert {fmt(bare_s, ' s')}",
            full_ratio,
            f"overhead <= {TARGET_OVERHEAD:.0%}",
            full_ratio <= 1 + TARGET_OVERHEAD,
        ),
    ]
    return {
        "source": {"path": str(source.relative_to(WORK.parent.parent)), "bytes": source.stat().st_size},
        "bare_seconds": bare_s,
        "adapter_seconds": adapter_s,
        "whole_step_seconds": full_s,
        "whole_step_peak_rss_mib_including_moto": summary([r["peak_rss_mib"] for r in full]),
        "targets": targets,
        "notes": [
            f"Source: a {name} qcow2 of random-looking data (made once into bench/work/), "
            f"converted to {TARGET}.",
            "The adapter figure is the qemu-img part of our step (QemuImg.convert: the same command, "
            "run with subprocess and a timeout).",
            "The whole step also downloads the image from moto's S3 with the format inspector and a "
            "sha512 check, and uploads the output with inspection, two hashes and a multipart upload "
            "into moto (~17 MB/s here); that S3 traffic through moto is most of its time, so its "
            "ratio to bare qemu-img says more about moto than about AWS.",
        ],
    }
