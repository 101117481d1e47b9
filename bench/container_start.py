"""Section "container_start": `make run ARGS=--containers` from the command to its banner.

Each run starts `python -m local --containers` (what `make run ARGS=--containers` runs; free ports)
as its own process, times it from launch to the banner's first line (the stack then answers: every
function's container has started), then stops it with SIGINT as Ctrl-C would and times the stop.
Target (issue: "container mode starts its containers in parallel"): under 60 s to the banner on
the 2-core machine, in every run.

Before the runs come one "first start after a layer changed": the layer images the container tier
builds (local/sam_images.py) are removed first, so that start builds them again, as after a
`make build` that changed a layer. It is reported apart, not part of the target. Needs
`make build` and `make containers`; without them the section says why and measures nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, REPOSITORY, WORK, fmt, say, summary, verdict

TARGET_SECONDS = 60.0
BANNER = "imagetasks is running locally"
STOP_TIMEOUT = 120.0
#: Seconds to the banner before local/sam_images.py (at fd27e63), measured as these runs are.
BEFORE_LAYER_IMAGES = (227.6, 205.6, 291.7)


def _start_and_stop(log: Path) -> dict[str, float]:
    """One start of the container mode: seconds to the banner, then seconds to stop."""
    command = [PYTHON, "-m", "local", "--containers", "--api-port", "0", "--aws-port", "0"]
    with log.open("ab") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL
        )
        assert process.stdout is not None
        banner = None
        for line in process.stdout:
            if BANNER.encode() in line:
                banner = time.perf_counter() - started
                break
        if banner is None:
            process.wait(timeout=STOP_TIMEOUT)
            raise RuntimeError(f"python -m local --containers exited ({process.returncode}), no banner")
        stopping = time.perf_counter()
        process.send_signal(signal.SIGINT)
        process.stdout.read()  # the rest of the banner and "stopping..."; else the pipe could fill
        process.wait(timeout=STOP_TIMEOUT)
        return {"banner_seconds": banner, "stop_seconds": time.perf_counter() - stopping}


def _remove_layer_images() -> list[str]:
    """The container tier's layer images, removed (one still used by a container stays): the next
    start builds what it needs again."""
    from local.sam_images import REPOSITORY_PREFIX
    from local.sam_local import _podman

    listed = _podman("images", "--format", "{{.Repository}}:{{.Tag}}")
    images = [name for name in listed.stdout.split() if name.startswith(REPOSITORY_PREFIX)]
    removed = [name for name in images if _podman("rmi", name).returncode == 0]
    return removed


def _measure(runs: int) -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "container_start.log"
    removed = _remove_layer_images()
    first = _start_and_stop(log)
    return {
        "removed_images": removed,
        "first_after_layer_change": first,
        "runs": [_start_and_stop(log) for _ in range(runs)],
    }


def run(quick: bool) -> dict[str, Any]:
    from local.sam_local import missing_prerequisites

    name = f"container mode (`make run ARGS=--containers`) reaches its banner within {TARGET_SECONDS:.0f} s"
    reason = missing_prerequisites()
    if reason:
        say(f"  not measured: {reason}")
        return {"error": None, "targets": [verdict(name, f"not measured: {reason}", "-", None, "-", None)]}
    result = _measure(1 if quick else 3)
    banner = summary([one["banner_seconds"] for one in result["runs"]])
    stop = summary([one["stop_seconds"] for one in result["runs"]])
    first = result["first_after_layer_change"]
    say(
        f"  to the banner: {fmt(banner, ' s', 1)}; stop {fmt(stop, ' s', 1)}; first start after a layer "
        f"change (its images built again) {first['banner_seconds']:.1f} s"
    )
    met = banner["max"] < TARGET_SECONDS
    return {
        **result,
        "banner_seconds": banner,
        "stop_seconds": stop,
        "targets": [
            verdict(
                name,
                f"{fmt(banner, ' s', 1)} to the banner",
                f"{TARGET_SECONDS:.0f} s",
                banner["max"] / TARGET_SECONDS,
                f"every run < {TARGET_SECONDS:.0f} s",
                met,
            )
        ],
        "notes": [
            "From launching `python -m local --containers` to the first line of its banner (every "
            "function's container started by `sam local start-lambda --warm-containers EAGER`), then "
            f"SIGINT until it exited. Runs: {json.dumps(result['runs'])}.",
            f"First start after a layer change (the layer images removed: {len(result['removed_images'])}, "
            f"so built again): {first['banner_seconds']:.1f} s to the banner. Not part of the target.",
            "Before the layer images (sam local building each function's image at every start, one "
            "build after another): "
            + ", ".join(f"{seconds:.1f}" for seconds in BEFORE_LAYER_IMAGES)
            + " s to the banner (measured the same way, 2026-12-07 on this machine, at fd27e63; "
            "load average about 10).",
        ],
    }
