"""Every patch of moto (local/moto_fixes.py) names the release it was written for, the pinned one,
says in one line what it corrects, has its upstream report drafted, and refuses another moto."""

from __future__ import annotations

import re

import pytest

from local import moto_fixes
from tests.support import ROOT

PATCH_FUNCTIONS = (
    "serialise_dynamodb_writes",
    "stream_s3_objects",
    "release_dropped_models",
    "stop_execution_with_cause",
    "ecs_integration_case",
    "roll_back_transactions_by_item",
    "snapshot_table_reads",
    "callbacks_skip_unstarted_executions",
)


def pinned_moto() -> str:
    pin = re.search(r"^moto\[[^\]]*\]==(\S+)$", (ROOT / "requirements-dev.txt").read_text(), re.MULTILINE)
    assert pin is not None
    return pin.group(1)


def test_each_patch_names_the_pinned_moto_and_what_it_corrects_in_one_line() -> None:
    assert sorted(moto_fixes.PATCHES) == sorted(PATCH_FUNCTIONS)
    for patch in moto_fixes.PATCHES.values():
        assert patch.written_for == pinned_moto() == moto_fixes.MOTO_VERSION
        assert patch.corrects and "\n" not in patch.corrects


def test_each_patch_has_an_upstream_report_drafted() -> None:
    reports = (ROOT / "docs" / "moto-upstream.md").read_text()
    for name in PATCH_FUNCTIONS:
        assert f"`{name}`" in reports, name


def test_another_moto_is_refused_with_what_to_do() -> None:
    with pytest.raises(
        RuntimeError, match=r"moto 5\.2\.5, but moto 5\.3\.0 is installed: compare each patch"
    ):
        moto_fixes.refuse_other_moto("5.2.5", installed="5.3.0")


def test_a_patch_written_for_another_moto_refuses_to_load() -> None:
    with pytest.raises(RuntimeError, match=r"moto 5\.1\.0"):
        moto_fixes.moto_patch(written_for="5.1.0", corrects="a behaviour of an older moto")
