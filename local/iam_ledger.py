"""What each role was allowed to do during a test run: (principal, action, resource) and the tests
that did it, written by each process to its own file in `$IMAGETASKS_IAM_LEDGER` (a directory).

`local/iam.py` records every call it authorised for a function's, the state machine's or the
container runner's role; `python -m tests.iam_ledger` merges the files into `docs/iam.md`. Off
(nothing kept) unless the variable is set. The test is read from `PYTEST_CURRENT_TEST`, which
pytest sets in the process for the test running now: a call made by a background thread (an
execution still running, the reconciler) is counted for the test running when it was made.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import uuid
from pathlib import Path

ENVIRONMENT = "IMAGETASKS_IAM_LEDGER"

_lock = threading.Lock()
#: (principal, action, resource) → the ids of the tests that made the call
_calls: dict[tuple[str, str, str], set[str]] = {}
_file: Path | None = None


def record(principal: str, action: str, resource: str) -> None:
    global _file
    directory = os.environ.get(ENVIRONMENT)
    if not directory:
        return
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    test = current.rsplit(" (", 1)[0] if current else "(outside a test)"
    with _lock:
        _calls.setdefault((principal, action, resource), set()).add(test)
        if _file is None:
            _file = Path(directory) / f"calls-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
            atexit.register(flush)


def flush() -> None:
    """Write what this process recorded (the whole of it: each flush replaces the file)."""
    with _lock:
        if _file is None:
            return
        rows = [
            {"principal": p, "action": a, "resource": r, "tests": sorted(tests)}
            for (p, a, r), tests in sorted(_calls.items())
        ]
        _file.parent.mkdir(parents=True, exist_ok=True)
        temporary = _file.with_suffix(".tmp")
        temporary.write_text(json.dumps(rows), encoding="utf-8")
        temporary.replace(_file)
