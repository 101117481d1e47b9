"""The `sam build` output (.aws-sam/build): what `sam deploy` uploads and the container tier runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

BUILD_DIR = ROOT / ".aws-sam" / "build"
BUILT_TEMPLATE = BUILD_DIR / "template.yaml"


def require(condition: bool, reason: str) -> None:
    """Skip when the tier's prerequisites are missing, except where CI promised them (it must run)."""
    if condition:
        return
    if os.environ.get("IMAGETASKS_REQUIRE_CONTAINERS") == "1":
        pytest.fail(f"{reason} (IMAGETASKS_REQUIRE_CONTAINERS=1: CI must run this tier)")
    pytest.skip(reason)


def python313() -> Path | None:
    """The Python 3.13 the functions' runtime declares, found as `make build` finds it."""
    result = subprocess.run(
        [str(ROOT / "local" / "find-python3.13")], capture_output=True, text=True, check=False
    )
    return Path(result.stdout.strip()) if result.returncode == 0 else None


@pytest.fixture(scope="session")
def built_template() -> Path:
    require(BUILT_TEMPLATE.is_file(), f"no {BUILT_TEMPLATE.relative_to(ROOT)}: run `make build`")
    return BUILT_TEMPLATE
