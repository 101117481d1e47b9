"""Section 8, the largest image per task type on each runner, from the code's own limits.

Nothing is hard-coded here: the template is loaded as `sam deploy` would see it with its default
parameters (and a worker image, so the container runner exists), each runner's settings are read
from the environment the template gives it (the Lambda functions', the worker task definition's),
and the largest size each task type accepts is found by binary search over the very checks the
steps run before any work: `RunnerLimits.transfer` (imports, same-format exports),
`check_working_space` (convert, other-format export, an import with ConversionFormat) and the image
checker's announced size (MaxImageSizeGiB). A size is "on Lambda" when Lambda keeps the work (no
`NeedsContainer`), "on the container runner" when the container runner accepts it.

Time is the one limit the code cannot check before a transfer starts; it is computed from an assumed
throughput (100 MB/s) times each runner's step timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.common import REPOSITORY, GiB, MiB, say, verdict

THROUGHPUT_BYTES_PER_SECOND = 100 * 1000 * 1000  # 100 MB/s: an assumption, stated in the table
QCOW2_EXPANSION = 10  # the small qcow2: its virtual disk is this many times its size
WORKER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imagetasks-worker:bench"
SEARCH_CEILING = 1 << 50  # 1 PiB: far above any limit


def largest(accepts: Callable[[int], bool], ceiling: int = SEARCH_CEILING) -> int:
    """The largest n in [0, ceiling] with accepts(n), for a predicate true up to a point."""
    if not accepts(0):
        return -1
    low, high = 0, ceiling
    if accepts(high):
        return high
    while high - low > 1:
        middle = (low + high) // 2
        if accepts(middle):
            low = middle
        else:
            high = middle
    return low


def _deployment() -> dict[str, Any]:
    """The runners' settings as the template defines them (defaults, with a worker image)."""
    from imagetasks.config import Settings, runner_limits
    from local.template import load_template

    template = load_template(REPOSITORY / "template.yaml", {"WorkerImageUri": WORKER_IMAGE})
    functions = {f.logical_id: f for f in template.functions.values()}
    convert = functions["ConvertTaskFunction"]
    worker = next(iter(template.task_definitions.values()))
    lambda_settings = Settings.from_environ(convert.environment)
    container_settings = Settings.from_environ(worker.environment)
    return {
        "parameters": template.parameters,
        "lambda": {
            "settings": lambda_settings,
            "limits": runner_limits(lambda_settings),
            "timeout_seconds": convert.timeout_seconds,
        },
        "container": {
            "settings": container_settings,
            "limits": runner_limits(container_settings),
            "timeout_seconds": int(template.parameters["WorkerStepTimeoutSeconds"]),
        },
    }


def _image(size: int, virtual_size: int, disk_format: str) -> Any:
    from imagetasks.domain.images import Image

    now = datetime.now(UTC)
    return Image(
        id="bench",
        disk_format=disk_format,
        container_format="bare",
        size=size,
        virtual_size=virtual_size,
        owner="bench",
        created_at=now,
        updated_at=now,
    )


def _keeps(call: Callable[[], None]) -> bool:
    """True when the check lets this runner do the work (no hand-off, no refusal)."""
    from imagetasks.domain.errors import InvalidRequest
    from imagetasks.domain.runners import NeedsContainer

    try:
        call()
    except (NeedsContainer, InvalidRequest):
        return False
    return True


def _fits_image_limit(settings: Any, size: int) -> bool:
    """The deployment's MaxImageSizeGiB, as the import's checker applies it to an announced size."""
    from imagetasks.composition import import_settings
    from imagetasks.domain.image_checks import ImageChecker

    checker = ImageChecker(import_settings(settings).checks, "raw", "bare", None)
    try:
        checker.check_announced_size(size)
    except Exception:  # ImageTooLarge
        return False
    return True


def _gib(n: int) -> str:
    return f"{n / GiB:,.2f} GiB"


def run(quick: bool) -> dict[str, Any]:
    from imagetasks.domain.conversion import WORK_MARGIN_BYTES, check_working_space, expected_output_size

    deployment = _deployment()
    rows: list[list[str]] = []
    figures: dict[str, dict[str, int]] = {}

    def transfer(runner: str) -> Callable[[int], bool]:
        limits = deployment[runner]["limits"]
        return lambda n: _keeps(lambda: limits.transfer(n))

    def working_space(runner: str, source_format: str, target: str, expansion: int) -> Callable[[int], bool]:
        limits = deployment[runner]["limits"]
        return lambda n: _keeps(
            lambda: check_working_space(_image(n, n * expansion, source_format), target, limits, "convert")
        )

    def by_time(runner: str) -> int:
        return int(THROUGHPUT_BYTES_PER_SECOND * deployment[runner]["timeout_seconds"])

    settings = deployment["lambda"]["settings"]
    image_limit = largest(lambda n: _fits_image_limit(settings, n))

    def same(n: int) -> int:
        return n

    def output(target: str, expansion: int) -> Callable[[int], int]:
        return lambda n: max(n, expected_output_size(n * expansion, target))

    cases: list[tuple[str, str, dict[str, Callable[[int], bool]], bool, Callable[[int], int]]] = [
        # (task, assumption, the check per runner, whether time bounds it as one transfer)
        (
            "import",
            "the source announces its length; moved at 100 MB/s",
            {"lambda": transfer("lambda"), "container": transfer("container")},
            True,
            same,
        ),
        (
            "import with ConversionFormat=raw",
            f"a small qcow2 whose virtual disk is {QCOW2_EXPANSION}x its size (fetched as an import, "
            "then converted in the register step)",
            {
                "lambda": working_space("lambda", "qcow2", "raw", QCOW2_EXPANSION),
                "container": working_space("container", "qcow2", "raw", QCOW2_EXPANSION),
            },
            False,
            output("raw", QCOW2_EXPANSION),
        ),
        (
            "convert raw → qcow2",
            "a raw-like image: virtual size = size",
            {
                "lambda": working_space("lambda", "raw", "qcow2", 1),
                "container": working_space("container", "raw", "qcow2", 1),
            },
            False,
            output("qcow2", 1),
        ),
        (
            "convert qcow2 → raw",
            f"a small qcow2 whose virtual disk is {QCOW2_EXPANSION}x its size",
            {
                "lambda": working_space("lambda", "qcow2", "raw", QCOW2_EXPANSION),
                "container": working_space("container", "qcow2", "raw", QCOW2_EXPANSION),
            },
            False,
            output("raw", QCOW2_EXPANSION),
        ),
        (
            "export, same format (a copy)",
            "moved at 100 MB/s",
            {"lambda": transfer("lambda"), "container": transfer("container")},
            True,
            same,
        ),
        (
            "export, other format (raw → qcow2)",
            "a raw-like image: virtual size = size (the same check as a convert)",
            {
                "lambda": working_space("lambda", "raw", "qcow2", 1),
                "container": working_space("container", "raw", "qcow2", 1),
            },
            False,
            same,
        ),
    ]
    for task, assumption, checks, is_transfer, capped in cases:
        found: dict[str, int] = {}
        cells: list[str] = []
        for runner in ("lambda", "container"):
            by_code = largest(checks[runner])
            bounds = []
            if by_code < SEARCH_CEILING:
                bounds.append((by_code, "LambdaMaxTransferGiB" if is_transfer else "working space"))
            if is_transfer:
                bounds.append((by_time(runner), "time at 100 MB/s"))
            by_image_limit = largest(lambda n: _fits_image_limit(settings, capped(n)))  # noqa: B023
            if 0 <= by_image_limit < SEARCH_CEILING:
                bounds.append(
                    (by_image_limit, "MaxImageSizeGiB" if capped is same else "MaxImageSizeGiB, output")
                )
            value, why = min(bounds)
            found[runner] = value
            found[f"{runner}_by_code"] = by_code
            found[f"{runner}_by_image_limit"] = by_image_limit
            if is_transfer:
                found[f"{runner}_by_time"] = by_time(runner)
            limited = f"{_gib(value)} ({why})"
            cells.append(limited)
        figures[task] = found
        rows.append([task, assumption, *cells])
        say(f"  {task}: Lambda {cells[0]}; container runner {cells[1]}")

    lambda_limits = deployment["lambda"]["limits"]
    container_limits = deployment["container"]["limits"]
    parameters = deployment["parameters"]
    convert_lambda = figures["convert raw → qcow2"]["lambda"]
    convert_container = figures["convert raw → qcow2"]["container"]
    targets = [
        verdict(
            "largest raw → qcow2 convert, Lambda / container runner (from the code's limits)",
            f"{_gib(convert_lambda)} / {_gib(convert_container)}",
            f"working space {lambda_limits.working_space_bytes // MiB} MiB / "
            f"{container_limits.working_space_bytes // GiB} GiB",
            convert_container / convert_lambda if convert_lambda > 0 else None,
            "reported (issue 13: the container runner takes what Lambda cannot)",
            convert_container > convert_lambda,
        )
    ]
    return {
        "parameters": {
            name: parameters[name]
            for name in (
                "EphemeralStorageMiB",
                "WorkerEphemeralStorageGiB",
                "LambdaMaxTransferGiB",
                "WorkerStepTimeoutSeconds",
                "MaxImageSizeGiB",
                "MaxVirtualSizeGiB",
            )
        },
        "lambda_timeout_seconds": deployment["lambda"]["timeout_seconds"],
        "work_margin_bytes": WORK_MARGIN_BYTES,
        "throughput_bytes_per_second": THROUGHPUT_BYTES_PER_SECOND,
        "image_limit_bytes": image_limit,
        "largest_bytes": figures,
        "targets": targets,
        "tables": [
            {
                "title": "Largest image per task type and runner (template defaults; binary search over "
                "the steps' own checks)",
                "columns": ["task", "assumption", "Lambda", "container runner"],
                "rows": rows,
            }
        ],
        "notes": [
            "Settings from template.yaml's defaults as `sam deploy` sees them, with WorkerImageUri set "
            f"(so the container runner exists): EphemeralStorageMiB {parameters['EphemeralStorageMiB']}, "
            f"WorkerEphemeralStorageGiB {parameters['WorkerEphemeralStorageGiB']}, LambdaMaxTransferGiB "
            f"{parameters['LambdaMaxTransferGiB']}, step timeouts "
            f"{deployment['lambda']['timeout_seconds']} s (Lambda) and "
            f"{parameters['WorkerStepTimeoutSeconds']} s (WorkerStepTimeoutSeconds), "
            f"MaxImageSizeGiB {parameters['MaxImageSizeGiB']}.",
            "Each figure is the largest size (bytes, found by binary search) that the runner's own "
            "check keeps: `RunnerLimits.transfer` for imports and same-format exports (Lambda hands "
            "anything over LambdaMaxTransferGiB to the container runner), `check_working_space` for "
            "conversions (the image, a copy as large as its virtual disk plus ~1% of tables, and "
            f"{WORK_MARGIN_BYTES // MiB} MiB of margin must fit).",
            "Transfers are also bounded by time, which no check can know in advance: 100 MB/s (an "
            "assumption) times the step timeout. The smaller of the two bounds is shown, with which one "
            "it is. Conversions move the data about three times (download, qemu-img, upload): at 100 MB/s "
            "their largest sizes take well under either timeout, so working space bounds them.",
            "MaxImageSizeGiB (the image checker's limit on imported bytes, and on a convert's output, "
            "counted here at `expected_output_size`, the bound the working-space check uses) applies on "
            "every runner; the smallest of the bounds is shown, named.",
            "Computed, not measured: these are what the code accepts, not runs at those sizes.",
        ],
    }
