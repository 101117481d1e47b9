"""What every section shares: repeated measurements, their summary, and the verdict lines."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
WORK = REPOSITORY / "bench" / "work"
MiB = 1024 * 1024
GiB = 1024 * MiB
PYTHON = sys.executable


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median of the runs with their spread (min, max) and count."""
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "runs": len(ordered),
        "values": [round(v, 6) for v in values],
    }


def fmt(stats: Mapping[str, Any], unit: str = "", digits: int = 2) -> str:
    """``median unit (min..max, n runs)``."""
    return (
        f"{stats['median']:.{digits}f}{unit} ({stats['min']:.{digits}f}..{stats['max']:.{digits}f}, "
        f"n={stats['runs']})"
    )


def verdict(
    name: str,
    measured: str,
    reference: str,
    ratio: float | None,
    target: str,
    met: bool | None,
) -> dict[str, Any]:
    """One target line: what was measured, against what, the ratio and whether the target is met.

    ``met`` is ``None`` when the section could not measure it (reported as PENDING, never as met).
    """
    line = {
        "name": name,
        "measured": measured,
        "reference": reference,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "met": met,
    }
    state = "PENDING" if met is None else ("met" if met else "NOT met")
    ratio_text = "-" if ratio is None else f"{ratio:.3f}"
    say(
        f"  [{state}] {name}: measured {measured}; reference {reference}; ratio {ratio_text}; target {target}"
    )
    return line


def say(text: str) -> None:
    """Print to the real stdout, even while a section sends the local stack's logs elsewhere."""
    print(text, file=sys.__stdout__, flush=True)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a worker subprocess: the layer and the repository on the path, moto's
    fake credentials, no X-Ray."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPOSITORY / "layers/common/python"), str(REPOSITORY)])
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.setdefault("AWS_REGION", "us-east-1")
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env["POWERTOOLS_TRACE_DISABLED"] = "1"
    env.setdefault("POWERTOOLS_METRICS_NAMESPACE", "imagetasks")
    env.setdefault("POWERTOOLS_SERVICE_NAME", "imagetasks")
    env.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    if extra:
        env.update(extra)
    return env


RESULT_MARK = "bench-result: "


def run_worker(module: str, args: Sequence[str], timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh interpreter; its result is the line `print_result` marked."""
    completed = subprocess.run(
        [PYTHON, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=bench_environment(),
        cwd=REPOSITORY,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{completed.stderr[-4000:]}")
    # The line the worker marked (`print_result`): a log line of a thread still ending may follow it.
    marked = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not marked:
        raise RuntimeError(f"{module} {' '.join(args)} printed no result:\n{completed.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(marked[-1].removeprefix(RESULT_MARK))
    return result


def print_result(result: Any) -> None:
    """A worker's answer to `run_worker`, on the real stdout."""
    print(RESULT_MARK + json.dumps(result), file=sys.__stdout__, flush=True)


def worker_or_failure(
    module: str, args: Sequence[str], target: str, timeout: float = 1800
) -> tuple[dict[str, Any], bool]:
    """``(the worker's result, True)``, or ``(the section's answer, False)`` when the run failed:
    its `target` reported as not met, with the reason."""
    try:
        return run_worker(module, args, timeout=timeout), True
    except Exception as error:
        message = f"{type(error).__name__}: {str(error)[-300:]}"
        say(f"  run failed ({message})")
        return {"error": message, "targets": [verdict(target, "run failed", "-", None, "-", False)]}, False


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return info
