"""One AWS SDK in the functions and the worker: boto3, botocore and s3transfer pinned together in the
dependencies layer (which comes before Lambda's runtime on sys.path; the worker image runs on that
layer too), and the same in the tests."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import ROOT

SDK = ("boto3", "botocore", "s3transfer")


def pins(path: Path) -> dict[str, str]:
    found = re.findall(
        r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", path.read_text(encoding="utf-8"), re.MULTILINE
    )
    return {name.lower(): version for name, version in found}


def test_the_layer_pins_the_whole_sdk_and_the_tests_use_the_same() -> None:
    layer = pins(ROOT / "layers" / "dependencies" / "requirements.txt")
    dev = pins(ROOT / "requirements-dev.txt")

    assert all(name in layer for name in SDK), layer
    assert dev.get("boto3", layer["boto3"]) == layer["boto3"]
