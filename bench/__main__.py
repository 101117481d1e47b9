"""``python -m bench [--quick] [--sections import,...,sustained,longpoll,patches]`` (default: every section).

Each section runs in its own interpreter (the moto-based ones own the process's ``mock_aws``), prints
its verdict lines as it goes, and the figures land in bench/results.json and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import PYTHON, REPOSITORY, bench_environment, machine
from bench.report import write_markdown

SECTIONS = {
    "import": "bench.imports",
    "convert": "bench.convert",
    "api": "bench.api",
    "coldstart": "bench.coldstart",
    "cost": "bench.cost",
    "throughput": "bench.throughput",
    "large": "bench.large",
    "runners": "bench.runners",
    "slots": "bench.slots",
    "sustained": "bench.sustained",
    "longpoll": "bench.longpoll",
    "patches": "bench.patches",
    "container_start": "bench.container_start",
}
RESULTS_JSON = REPOSITORY / "bench" / "results.json"
RESULTS_MD = REPOSITORY / "bench" / "RESULTS.md"


def _run_section_here(name: str, quick: bool, out: Path) -> None:
    module = importlib.import_module(SECTIONS[name])
    start = time.perf_counter()
    result: dict[str, Any] = module.run(quick)
    result["section_seconds"] = round(time.perf_counter() - start, 1)
    out.write_text(json.dumps(result, indent=2, default=str))


def _run_section(name: str, quick: bool) -> dict[str, Any]:
    print(f"== {name}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "section.json"
        args = [PYTHON, "-m", "bench", "--run-one", name, "--out", str(out)]
        if quick:
            args.append("--quick")
        completed = subprocess.run(args, env=bench_environment(), cwd=REPOSITORY, check=False)
        if completed.returncode != 0 or not out.exists():
            print(f"  [NOT met] section {name} failed (exit {completed.returncode})", flush=True)
            return {"error": f"exit status {completed.returncode}", "targets": []}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer runs (development)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave results.json and RESULTS.md alone"
    )
    args = parser.parse_args()
    if args.run_one:
        _run_section_here(args.run_one, args.quick, args.out)
        return
    names = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "sections": {},
    }
    if not args.no_write and RESULTS_JSON.exists():
        # A partial run (--sections) keeps the other sections' last figures.
        previous = json.loads(RESULTS_JSON.read_text())
        if previous.get("quick") == args.quick:
            results["sections"] = previous.get("sections", {})
    for name in names:
        results["sections"][name] = _run_section(name, args.quick)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    missed = [
        (name, t["name"])
        for name, section in results["sections"].items()
        for t in section.get("targets", [])
        if t["met"] is not True
    ]
    print("== summary")
    for name, section in results["sections"].items():
        for t in section.get("targets", []):
            state = "PENDING" if t["met"] is None else ("met" if t["met"] else "NOT met")
            print(f"  {name}: [{state}] {t['name']}")
    print(f"  {len(missed)} target(s) not met or pending")
    if not args.no_write:
        RESULTS_JSON.write_text(json.dumps(results, indent=2, default=str) + "\n")
        write_markdown(results, RESULTS_MD)
        print(f"wrote {RESULTS_JSON.relative_to(REPOSITORY)} and {RESULTS_MD.relative_to(REPOSITORY)}")


if __name__ == "__main__":
    main()
    sys.exit(0)
