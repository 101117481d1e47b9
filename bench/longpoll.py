"""Section "longpoll": do 50 open long polls slow down everyone else?

One local stack; in each of 5 projects three imports from a held source (a server that trickles 1
KiB every 5 s, with the deployment's minimum transfer rate off: the tasks stay processing); two run
and the third waits pending behind them (MaxConcurrentTasksPerProject 2, the template's). None ends
while the polls run, so every poll is open for its wait or until its task's progress moves; a run in
which a polled task ended measured polls answered at once instead, and is not counted as met. 50
pollers, 10 per project (the per-project bound on open long polls), each loop ``GET
/v2/tasks/{id}?wait=20`` (quick: ``wait=5``) on one of their project's tasks; a 429 (past the bound,
e.g. a poll sent again before the last one's slot was freed) is counted apart. A separate client, in
a sixth project, times ``POST /v2/images`` (a queued image record) and ``GET /v2/tasks``: rounds
alternate a block of requests without polls and a block with the 50 polls open, the same number of
requests each. Target: the other requests answer as fast with the polls open as without, taken as
met when the median with polls is at most 1.5 times the median without.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from typing import Any

from bench.common import print_result, say, verdict

PROJECTS = 5
POLLS_PER_PROJECT = 10
RATIO_TARGET = 1.5


def _stats(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "n": len(ordered),
    }


class _Pollers:
    """The long pollers: each loops GET ?wait= on one task while `on` is set, until `stop`."""

    def __init__(self, url: str, tokens: dict[str, dict[str, str]], wait: int) -> None:
        self.url = url
        self.tokens = tokens
        self.wait = wait
        self.lock = threading.Lock()
        self.counts = {"sent": 0, "200": 0, "429": 0, "other": 0, "errors": 0}
        self.others: list[str] = []
        self.open = 0
        self.max_open = 0
        self.on = threading.Event()
        self.stop = threading.Event()

    def loop(self, project: str, task_id: str) -> None:
        import requests

        with requests.Session() as session:
            while not self.stop.is_set():
                if not self.on.is_set():
                    self.on.wait(0.2)
                    continue
                with self.lock:
                    self.counts["sent"] += 1
                    self.open += 1
                    self.max_open = max(self.max_open, self.open)
                try:
                    response = session.get(
                        f"{self.url}/v2/tasks/{task_id}?wait={self.wait}",
                        headers=self.tokens[project],
                        timeout=60,
                    )
                    key = str(response.status_code) if response.status_code in (200, 429) else "other"
                    if key == "other":
                        with self.lock:
                            self.others.append(f"{response.status_code} {response.text[:120]}")
                except requests.RequestException:
                    key = "errors"
                with self.lock:
                    self.counts[key] += 1
                    self.open -= 1
                if key == "429":
                    time.sleep(2)  # the answer's Retry-After


def _measure(stack: Any, server: Any, rounds: int, per_block: int, wait: int) -> dict[str, Any]:
    import requests

    from bench import image_server
    from bench.stack import import_body

    url = stack.api_url
    projects = [f"bench-longpoll-{n}" for n in range(PROJECTS)]
    tokens = {p: {"X-Auth-Token": stack.token(p), "Accept": "application/json"} for p in projects}
    tasks: dict[str, list[str]] = {}
    with requests.Session() as session:
        for project in projects:
            tasks[project] = []
            for _ in range(3):
                # Every source held: whichever two of the three take the project's slots, none ends,
                # so every poll stays open (a poll on a final task answers at once: a busy loop).
                response = session.post(
                    f"{url}/v2/tasks",
                    json=import_body(server.held_url(1024 * 1024)),
                    headers=tokens[project],
                    timeout=60,
                )
                response.raise_for_status()
                tasks[project].append(str(response.json()["id"]))

    other = {"X-Auth-Token": stack.token("bench-longpoll-other"), "Accept": "application/json"}
    image_body = {"name": "bench-longpoll", "disk_format": "raw", "container_format": "bare"}
    pollers = _Pollers(url, tokens, wait)
    threads = [
        threading.Thread(target=pollers.loop, args=(p, tasks[p][i % len(tasks[p])]), daemon=True)
        for p in projects
        for i in range(POLLS_PER_PROJECT)
    ]
    for thread in threads:
        thread.start()

    timings: dict[str, dict[str, list[float]]] = {
        kind: {"without": [], "with": []} for kind in ("POST /v2/images", "GET /v2/tasks")
    }
    failures: list[str] = []
    open_during: list[int] = []

    def block(session: requests.Session, label: str) -> None:
        for _ in range(per_block):
            for kind in timings:
                start = time.perf_counter()
                if kind == "POST /v2/images":
                    response = session.post(f"{url}/v2/images", json=image_body, headers=other, timeout=60)
                    ok = response.status_code == 201
                else:
                    response = session.get(f"{url}/v2/tasks", headers=other, timeout=60)
                    ok = response.status_code == 200
                timings[kind][label].append(time.perf_counter() - start)
                if label == "with":
                    open_during.append(pollers.open)
                if not ok:
                    failures.append(f"{kind} {response.status_code} {response.text[:120]}")

    try:
        with requests.Session() as session:
            for _ in range(rounds):
                block(session, "without")
                pollers.on.set()
                time.sleep(2)  # let the 50 polls open
                block(session, "with")
                pollers.on.clear()
                # The open polls end within `wait` seconds; the next "without" block starts after.
                deadline = time.monotonic() + wait + 30
                while pollers.open and time.monotonic() < deadline:
                    time.sleep(0.2)
        with requests.Session() as session:
            statuses = Counter(
                session.get(f"{url}/v2/tasks/{task_id}", headers=tokens[project], timeout=60).json()["status"]
                for project in projects
                for task_id in tasks[project]
            )
    finally:
        pollers.stop.set()
        pollers.on.set()
        image_server.held_release.set()
        for thread in threads:
            thread.join(timeout=wait + 30)
    return {
        "rounds": rounds,
        "requests_per_block": per_block,
        "wait": wait,
        "polls": pollers.counts,
        "max_polls_open": pollers.max_open,
        "other_answers": pollers.others[:5],
        "polled_task_statuses_at_end": dict(statuses),
        "polls_open_during_with": {
            "min": min(open_during, default=0),
            "median": statistics.median(open_during) if open_during else 0,
        },
        "failures": failures[:5],
        "failure_count": len(failures),
        "latency": {
            kind: {label: _stats(values) for label, values in by_label.items()}
            for kind, by_label in timings.items()
        },
    }


def _one_run(rounds: int, per_block: int, wait: int) -> dict[str, Any]:
    import contextlib
    import resource

    from bench.common import WORK
    from bench.stack import local_stack

    cap = 8 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    WORK.mkdir(parents=True, exist_ok=True)
    with (
        open(WORK / "longpoll.log", "a") as log,
        contextlib.redirect_stdout(log),
        local_stack(max_tasks=2 * PROJECTS, parameters={"ImportMinTransferKiBps": "0"}) as (stack, server),
    ):
        return _measure(stack, server, rounds, per_block, wait)


def run(quick: bool) -> dict[str, Any]:
    from bench.common import worker_or_failure

    rounds, per_block, wait = (2, 5, 5) if quick else (5, 20, 20)
    r, ran = worker_or_failure(
        "bench.longpoll", [str(rounds), str(per_block), str(wait)], "others as fast with 50 long polls open"
    )
    if not ran:
        return r
    polls = r["polls"]
    say(
        f"  {polls['sent']} long polls (wait={wait}) sent, {polls['200']} answered 200, {polls['429']} 429, "
        f"{polls['other']} other, {polls['errors']} errors; at most {r['max_polls_open']} open at once, "
        f"median {r['polls_open_during_with']['median']} open while timing; "
        f"{r['failure_count']} failed timed requests; "
        f"polled tasks at the end {r['polled_task_statuses_at_end']}"
        + (f"; other answers {r['other_answers']}" if r["other_answers"] else "")
    )
    ended = {s: n for s, n in r["polled_task_statuses_at_end"].items() if s not in ("pending", "processing")}
    rows = []
    targets = []
    for kind, by_label in r["latency"].items():
        without, with_ = by_label["without"], by_label["with"]
        ratio = with_["median"] / without["median"]
        p90_ratio = with_["p90"] / without["p90"]
        rows.append(
            [
                kind,
                with_["n"],
                f"{without['median'] * 1000:.0f} ms",
                f"{without['p90'] * 1000:.0f} ms",
                f"{with_['median'] * 1000:.0f} ms",
                f"{with_['p90'] * 1000:.0f} ms",
                f"{ratio:.2f}",
                f"{p90_ratio:.2f}",
            ]
        )
        say(
            f"  {kind}: without polls median {without['median'] * 1000:.0f} ms p90 "
            f"{without['p90'] * 1000:.0f} ms; with 50 polls open median {with_['median'] * 1000:.0f} ms "
            f"p90 {with_['p90'] * 1000:.0f} ms (n={with_['n']} each)"
        )
        targets.append(
            verdict(
                f"{kind} as fast with 50 long polls open",
                f"median {with_['median'] * 1000:.0f} ms, p90 {with_['p90'] * 1000:.0f} ms "
                "with the polls open",
                f"median {without['median'] * 1000:.0f} ms, p90 {without['p90'] * 1000:.0f} ms without",
                ratio,
                f"median ratio <= {RATIO_TARGET}, none failed, no polled task ended "
                "(the issue: as fast as without)" + (f"; polled tasks ended: {ended}" if ended else ""),
                ratio <= RATIO_TARGET and r["failure_count"] == 0 and not ended,
            )
        )
    return {
        "runs": [r],
        "targets": targets,
        "tables": [
            {
                "title": f"Other requests with 50 long polls (wait={wait}) open vs. without (local stack)",
                "columns": [
                    "request",
                    "n each",
                    "median without",
                    "p90 without",
                    "median with",
                    "p90 with",
                    "median ratio",
                    "p90 ratio",
                ],
                "rows": rows,
            }
        ],
        "notes": [
            f"{PROJECTS} projects x {POLLS_PER_PROJECT} pollers on tasks that stay processing (a held "
            "source, ImportMinTransferKiBps 0 so it is not refused as too slow) or pending; "
            "MaxConcurrentTasks 10, MaxConcurrentTasksPerProject as the template (2). "
            f"The polled tasks' statuses after the last round: {r['polled_task_statuses_at_end']}.",
            f"Long polls: {polls['sent']} sent, {polls['200']} answered, {polls['429']} answered 429 "
            f"(counted apart: past 10 open per project), {polls['other']} other, {polls['errors']} "
            f"errors; at most {r['max_polls_open']} open at once.",
            "Other answers to long polls (first 5; neither 200 nor 429): "
            + ("; ".join(r["other_answers"]) if r["other_answers"] else "none")
            + ".",
            f"{rounds} rounds, each {per_block} requests of each kind without polls then {per_block} with "
            f"them open (interleaved); a separate project's client. Met: median ratio <= {RATIO_TARGET}.",
        ],
    }


if __name__ == "__main__":
    import sys

    print_result(_one_run(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
