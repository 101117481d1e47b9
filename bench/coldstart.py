"""Section 4, cold start: a fresh interpreter importing each function's handler module.

Each sample is a new ``python`` process that times its own ``import app`` (functions/<name> and the
common layer on the path, the function's environment from template.yaml); the whole process's wall
time (interpreter start included) is recorded too. ``import boto3`` alone is measured the same way,
interleaved with the handlers, as the reference.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.common import PYTHON, REPOSITORY, bench_environment, fmt, say, summary, verdict

TARGET_RATIO = 2.0
PROBE = (
    "import time, json; t = time.perf_counter(); import {module}; "
    "print(json.dumps({{'import_s': time.perf_counter() - t}}))"
)


def _functions() -> dict[str, tuple[Path, dict[str, str]]]:
    """logical id → (code folder, environment), from the template."""
    from local.template import load_template

    template = load_template(REPOSITORY / "template.yaml")
    return {
        logical_id: (spec.code_dir, {k: str(v) for k, v in spec.environment.items()})
        for logical_id, spec in template.functions.items()
    }


def _sample(module: str, code_dir: Path | None, environment: dict[str, str]) -> tuple[float, float]:
    paths = [str(REPOSITORY / "layers/common/python")]
    if code_dir is not None:
        paths.insert(0, str(code_dir))
    env = bench_environment({**environment, "PYTHONPATH": ":".join(paths), "POWERTOOLS_TRACE_DISABLED": "1"})
    import time

    start = time.perf_counter()
    completed = subprocess.run(
        [PYTHON, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        env=env,
        cwd=code_dir or REPOSITORY,
        check=False,
    )
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"import {module} from {code_dir} failed:\n{completed.stderr[-3000:]}")
    return float(json.loads(completed.stdout.strip().splitlines()[-1])["import_s"]), wall


def heaviest_imports(code_dir: Path, environment: dict[str, str], top: int = 12) -> list[list[str]]:
    """``python -X importtime``: the top-level imports of ``app`` that cost the most (cumulative)."""
    paths = [str(code_dir), str(REPOSITORY / "layers/common/python")]
    env = bench_environment({**environment, "PYTHONPATH": ":".join(paths), "POWERTOOLS_TRACE_DISABLED": "1"})
    completed = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import app"],
        capture_output=True,
        text=True,
        env=env,
        cwd=code_dir,
        check=False,
    )
    rows: list[tuple[int, str]] = []
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.split("|", 2)
        depth = len(name) - len(name.lstrip())
        if depth <= 5:  # app, its own imports and theirs
            rows.append((int(cumulative), name.strip()))
    rows.sort(reverse=True)
    return [[name, f"{micros / 1000:.0f} ms"] for micros, name in rows[:top]]


def run(quick: bool) -> dict[str, Any]:
    runs = 3 if quick else 10
    functions = _functions()
    imports: dict[str, list[float]] = {"boto3": [], **{name: [] for name in functions}}
    walls: dict[str, list[float]] = {name: [] for name in imports}
    empty: list[float] = []
    for _ in range(runs):
        # Round-robin so every module sees the same mix of machine noise.
        t, w = _sample("boto3", None, {})
        imports["boto3"].append(t)
        walls["boto3"].append(w)
        empty.append(_sample("sys", None, {})[1])
        for name, (code_dir, environment) in functions.items():
            t, w = _sample("app", code_dir, environment)
            imports[name].append(t)
            walls[name].append(w)
    reference = summary([v * 1000 for v in imports["boto3"]])
    interpreter = summary([v * 1000 for v in empty])
    rows = []
    for name in imports:
        stats = summary([v * 1000 for v in imports[name]])
        wall = summary([v * 1000 for v in walls[name]])
        rows.append(
            [name, fmt(stats, " ms", 0), fmt(wall, " ms", 0), f"{stats['median'] / reference['median']:.2f}"]
        )
    api = summary([v * 1000 for v in imports["TasksApiFunction"]])
    ratio = api["median"] / reference["median"]
    targets = [
        verdict(
            "tasks API handler import (TasksApiFunction)",
            fmt(api, " ms", 0),
            f"import boto3 {fmt(reference, ' ms', 0)}",
            ratio,
            f"<= {TARGET_RATIO}x boto3",
            ratio <= TARGET_RATIO,
        )
    ]
    images = summary([v * 1000 for v in imports["ImagesApiFunction"]])
    images_ratio = images["median"] / reference["median"]
    targets.append(
        verdict(
            "images API handler import (ImagesApiFunction)",
            fmt(images, " ms", 0),
            f"import boto3 {fmt(reference, ' ms', 0)}",
            images_ratio,
            f"<= {TARGET_RATIO}x boto3",
            images_ratio <= TARGET_RATIO,
        )
    )
    for row in rows:
        say(f"  {row[0]}: import {row[1]}, process wall {row[2]}, x boto3 {row[3]}")
    heaviest = heaviest_imports(*functions["TasksApiFunction"])
    return {
        "runs": runs,
        "import_ms": {name: summary([v * 1000 for v in values]) for name, values in imports.items()},
        "process_wall_ms": {name: summary([v * 1000 for v in values]) for name, values in walls.items()},
        "empty_interpreter_wall_ms": interpreter,
        "targets": targets,
        "tables": [
            {
                "title": f"Import time of each handler module in a fresh interpreter (n={runs})",
                "columns": ["module", "import (median, min..max)", "whole process wall", "x import boto3"],
                "rows": rows,
            },
            {
                "title": "Where the tasks API's import time goes (-X importtime, one run, cumulative)",
                "columns": ["module", "cumulative"],
                "rows": heaviest,
            },
        ],
        "notes": [
            "import = time.perf_counter() around `import app` inside the fresh interpreter; "
            "process wall = the whole `python -c` process, interpreter start-up included "
            f"(an empty interpreter: {fmt(interpreter, ' ms', 0)}).",
            "The boto3 row is `import boto3` alone, measured interleaved with the handlers.",
            "Local disk and CPython 3.11 here; Lambda's cold start adds the runtime's own init and "
            "reading the code from the deployment package.",
        ],
    }
