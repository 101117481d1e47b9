"""The README's quick start, run as a newcomer runs it, on a clean clone, before anything is installed.

It reads the commands from README.md's "Quick start" section, so the README and this check cannot
drift: the first sh block (`make run`) runs in the background; the other sh blocks run, in order, in
one bash with `set -euo pipefail` (a failing command fails the check); each python block runs with
`python` in that same shell, as a newcomer pastes it. Then it checks what the commands should have
done: every import they started (the curl one, the upload, openstacksdk's) ends `success`.

Standard library only: nothing is installed when it runs. Exit status 0 when everything held.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API = "http://127.0.0.1:3000"
#: A fresh clone installs .venv and .venv-sam before the API answers: minutes, not seconds.
START_DEADLINE_S = 15 * 60
TASKS_DEADLINE_S = 5 * 60
#: The imports the quick start starts: the curl one, the S3 upload, openstacksdk's.
EXPECTED_IMPORTS = 3


def quick_start_blocks(readme: str) -> list[tuple[str, str]]:
    """The (language, code) of each fenced block of the "## Quick start" section, in order."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", readme, re.S | re.M)
    if not section:
        raise SystemExit("README.md has no '## Quick start' section")
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w+)\n(.*?)^```", section[1], re.S | re.M)]


def shell_script(blocks: list[tuple[str, str]]) -> str:
    lines = ["set -euo pipefail", "set -x"]
    for language, code in blocks:
        if language == "sh":
            lines.append(code)
        elif language == "python":
            lines += ["python - <<'QUICKSTART_PYTHON'", code.rstrip("\n"), "QUICKSTART_PYTHON"]
        else:
            raise SystemExit(f"quick start block in {language!r}: only sh and python are run")
    lines.append('echo "QUICKSTART_TASK=$TASK"')
    return "\n".join(lines) + "\n"


def get(path: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"X-Auth-Token": token} if token else {}
    request = urllib.request.Request(API + path, headers=headers)  # noqa: S310 - the local API, http
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def wait_for_api(server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"make run exited with status {server.returncode} before the API answered")
        if get("/versions")[0] == 200:
            return
        time.sleep(2)
    raise SystemExit(f"the API did not answer within {START_DEADLINE_S} s of make run")


def check_imports(token: str) -> None:
    """Every import the quick start started ends success (the upload's task appears on its own)."""
    deadline = time.monotonic() + TASKS_DEADLINE_S
    tasks: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        status, body = get("/v2/tasks?type=import&limit=100", token)
        if status != 200:
            raise SystemExit(f"GET /v2/tasks answered {status}: {body[:300]!r}")
        tasks = json.loads(body)["tasks"]
        statuses = sorted(str(task["status"]) for task in tasks)
        if "failure" in statuses:
            failed = [task for task in tasks if task["status"] == "failure"]
            raise SystemExit(f"a quick start import failed: {json.dumps(failed, indent=1)}")
        if len(tasks) >= EXPECTED_IMPORTS and set(statuses) == {"success"}:
            print(f"quick start: {len(tasks)} imports, all success", flush=True)
            return
        time.sleep(2)
    raise SystemExit(f"quick start imports not all success in {TASKS_DEADLINE_S} s: {tasks}")


def _stop(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def main() -> int:
    blocks = quick_start_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    if not blocks or blocks[0] != ("sh", "make run\n"):
        raise SystemExit("the quick start's first block must be `make run` alone")
    log = open(ROOT / "quickstart-run.log", "wb")  # noqa: SIM115 - open for the server's whole life
    started = time.monotonic()
    server = subprocess.Popen(
        ["make", "run"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_api(server)
        print(f"quick start: make run answered after {time.monotonic() - started:.0f} s", flush=True)
        script = shell_script(blocks[1:])
        shell = subprocess.Popen(
            ["bash", "-c", script],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = shell.communicate(timeout=900)
        finally:
            _stop(shell.pid, signal.SIGTERM)  # what the commands left in the background (the file server)
        sys.stdout.write(stdout)
        sys.stderr.write(stderr)
        if shell.returncode != 0:
            raise SystemExit(
                f"a quick start command failed (exit status {shell.returncode}); its trace is above"
            )
        if not re.search(r"^QUICKSTART_TASK=\S+$", stdout, re.M):
            raise SystemExit("the quick start did not create a task")
        if '"versions"' not in stdout:
            raise SystemExit("curl /versions printed no versions")
        if not re.search(r"^success \{'image_id': ", stdout, re.M):
            raise SystemExit("openstacksdk's task did not print success and its image")
        token = subprocess.run(
            ["make", "-s", "token", "PROJECT=demo-project"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        check_imports(token)
        print(f"quick start: passed in {time.monotonic() - started:.0f} s", flush=True)
        return 0
    finally:
        _stop(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _stop(server.pid, signal.SIGKILL)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
