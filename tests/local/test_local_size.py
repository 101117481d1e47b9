"""`local/` keeps to its size: each part of it (docs/local.md, "What `local/` holds") has a budget
of lines, and a change that grows a part past it fails here until the budget is raised in this
file and in that table, with the AWS behaviour moto lacks, or the documented command, that the new
lines serve. Lines are counted as `wc -l local/*.py` counts them."""

from __future__ import annotations

import pytest

from tests.support import ROOT

LOCAL = ROOT / "local"

#: part -> (its files, its budget in lines)
PARTS: dict[str, tuple[tuple[str, ...], int]] = {
    "the stack: start and stop, resources, TTL, EventBridge, the loopback guard, the command": (
        (
            "__init__.py",
            "__main__.py",
            "events.py",
            "loopback_guard.py",
            "provision.py",
            "stack.py",
            "tokens.py",
        ),
        960,
    ),
    "the template reader": (("template.py", "sam_translate.py"), 930),
    "API Gateway": (("front.py",), 480),
    "Lambda": (("lambda_runtime.py",), 530),
    "IAM": (("iam.py", "iam_policy.py", "iam_ledger.py"), 720),
    "moto's behaviours corrected": (("moto_fixes.py",), 790),
    "ECS": (("ecs.py",), 340),
    "the built artifact in Lambda-like containers": (
        ("container_runner.py", "sam_images.py", "sam_local.py"),
        710,
    ),
    "`make invoke` and `make sam-invoke`": (("invoke.py",), 600),
}


def lines(name: str) -> int:
    return (LOCAL / name).read_bytes().count(b"\n")


def test_every_file_of_local_belongs_to_one_part() -> None:
    named = [name for files, _ in PARTS.values() for name in files]
    assert len(named) == len(set(named))
    assert sorted(named) == sorted(path.name for path in LOCAL.glob("*.py"))


@pytest.mark.parametrize("part", list(PARTS))
def test_each_part_keeps_to_its_budget(part: str) -> None:
    files, budget = PARTS[part]
    size = sum(lines(name) for name in files)
    assert size <= budget, (
        f"{part}: {size} lines, over its budget of {budget}. Say in docs/local.md which AWS behaviour "
        "moto lacks, or which command, the new lines serve, and raise the budget there and in this file."
    )


def test_the_budgets_are_those_docs_local_md_gives() -> None:
    table = (ROOT / "docs" / "local.md").read_text()
    for part, (_, budget) in PARTS.items():
        assert f"| {part} | {budget:,} |" in table, part
