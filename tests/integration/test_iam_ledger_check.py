"""`python -m tests.iam_ledger`: make test's last step, on the real template (translated by SAM)."""

from __future__ import annotations

import json
from pathlib import Path


def test_the_check_fails_on_unexplained_grants_and_only_when_asked(tmp_path: Path) -> None:
    from tests.iam_ledger import main

    calls = tmp_path / "calls"
    calls.mkdir()
    (calls / "calls-1.json").write_text(
        json.dumps(
            [
                {
                    "principal": "AuthorizerFunction",
                    "action": "secretsmanager:GetSecretValue",
                    "resource": "x",
                    "tests": ["t"],
                }
            ]
        )
    )
    out = tmp_path / "iam.md"

    # Nothing recorded: nothing to write or check
    assert main(["--calls", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert not out.exists()
    # Written without --check, whatever is unexercised (a partial run is no failure)
    assert main(["--calls", str(calls), "--out", str(out)]) == 0
    assert "## TasksApiFunction" in out.read_text()
    # With --check, a grant no test used and no reason explains fails the build
    assert main(["--calls", str(calls), "--out", str(out), "--check"]) == 1
