"""Section "sustained", load held over time: 8 and 32 clients keep creating import tasks and
polling them for 300 s (quick: 15 s), on one local stack per level.

Each client loops: create an import of a 1 MiB image from a local HTTP server, GET it every second
until it is final, create the next. When the load time is over no new task is created; the clients
keep polling the tasks they hold until final, for at most a bound (300 s; quick 60 s). Measured per
level: requests sent; requests dropped (timeouts of 60 s, connection errors, 5xx); tasks created;
tasks that showed no change of status or progress for the stall window (60 s; quick: scaled down
with the load time, 15/300 of it, i.e. 3 s) while not final, as seen by the polling client; tasks not
final at the end; p50/p99 create latency; tasks completed per second (succeeded over the time from
the first request to the last task final).

The stack is `make run`'s local stack (moto, every function in one process) with the template's
parameters but MaxConcurrentTasks 8 and MaxConcurrentTasksPerProject 0 (stated in the notes); the
clients share one project.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import print_result, say, verdict

LEVELS = (8, 32)
MAX_TASKS = 8
FULL_SECONDS = 300.0
QUICK_SECONDS = 15.0
FULL_STALL = 60.0
POLL_EVERY = 1.0
FINAL = ("success", "failure")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class _Tally:
    """What the clients of one level count, under one lock."""

    def __init__(self, auth: dict[str, str], stall: float) -> None:
        self.auth = auth
        self.stall = stall
        self.lock = threading.Lock()
        self.counts = {"sent": 0, "dropped": 0, "created": 0, "succeeded": 0, "failed": 0, "not_final": 0}
        self.drops: list[str] = []
        self.create_latency: list[float] = []
        self.stalled: list[dict[str, Any]] = []
        self.unchanged: list[float] = []
        self.last_final = 0.0

    def add(self, key: str, note: str | None = None) -> None:
        with self.lock:
            self.counts[key] += 1
            if note:
                self.drops.append(note)

    def request(self, session: Any, method: str, url: str, **kw: Any) -> Any:
        """One request; a timeout, a connection error or a 5xx is a dropped request (None)."""
        import requests

        self.add("sent")
        try:
            response = session.request(method, url, headers=self.auth, timeout=60, **kw)
        except requests.RequestException as error:
            self.add("dropped", f"{method} {type(error).__name__}")
            return None
        if response.status_code >= 500:
            self.add("dropped", f"{method} {response.status_code} {response.text[:120]}")
            return None
        return response

    def follow(self, session: Any, url: str, hard_deadline: float) -> None:
        """GET the task every POLL_EVERY s until final (or the deadline); note how long it stood still."""
        seen: Any = None
        changed = time.monotonic()
        worst = 0.0
        while time.monotonic() < hard_deadline:
            response = self.request(session, "GET", url)
            now = time.monotonic()
            task = response.json() if response is not None and response.status_code == 200 else {}
            if task:
                state = (task.get("status"), task.get("progress"))
                if state != seen:
                    seen, changed = state, now
            if task.get("status") in FINAL:
                self.add("succeeded" if task["status"] == "success" else "failed")
                with self.lock:
                    self.last_final = max(self.last_final, time.perf_counter())
                break
            worst = max(worst, now - changed)
            time.sleep(POLL_EVERY)
        else:
            self.add("not_final")
        with self.lock:
            self.unchanged.append(worst)
            if worst >= self.stall:
                self.stalled.append({"url": url, "seconds_unchanged": round(worst, 1), "last": seen})


def _level(
    stack: Any, server: Any, clients: int, seconds: float, stall: float, drain: float
) -> dict[str, Any]:
    import requests

    from bench.stack import TINY_IMAGE, headers, import_body

    body = import_body(server.url(TINY_IMAGE))
    tally = _Tally(headers(stack), stall)

    start = time.perf_counter()
    load_end = time.monotonic() + seconds
    hard_deadline = load_end + drain

    def client(_: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < load_end:
                sent = time.perf_counter()
                response = tally.request(session, "POST", f"{stack.api_url}/v2/tasks", json=body)
                if response is None or response.status_code != 201:
                    if response is not None:
                        with tally.lock:
                            tally.drops.append(f"POST {response.status_code} (not counted as dropped)")
                    time.sleep(POLL_EVERY)
                    continue
                with tally.lock:
                    tally.create_latency.append(time.perf_counter() - sent)
                tally.add("created")
                task_url = f"{stack.api_url}/v2/tasks/{response.json()['id']}"
                tally.follow(session, task_url, hard_deadline)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    end = tally.last_final or time.perf_counter()
    counts = tally.counts
    return {
        "clients": clients,
        "seconds": seconds,
        "stall_window_seconds": stall,
        **counts,
        "stalled": len(tally.stalled),
        "stalled_examples": tally.stalled[:5],
        "longest_unchanged_s": round(max(tally.unchanged, default=0.0), 1),
        "drop_examples": tally.drops[:5],
        "create_p50_s": _percentile(tally.create_latency, 0.50),
        "create_p99_s": _percentile(tally.create_latency, 0.99),
        "completed_per_s": counts["succeeded"] / max(end - start, 1e-9),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def _one_run(clients: int, seconds: float, stall: float, drain: float) -> dict[str, Any]:
    """One level on a fresh local stack in this (fresh) process; the stack's logs go to a file."""
    import contextlib
    import resource

    from bench.common import WORK
    from bench.stack import local_stack

    cap = 8 * 1024**3  # as throughput: a runaway local stack fails alone
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    WORK.mkdir(parents=True, exist_ok=True)
    with (
        open(WORK / f"sustained-{clients}.log", "a") as log,
        contextlib.redirect_stdout(log),
        local_stack(max_tasks=MAX_TASKS, parameters={"MaxConcurrentTasksPerProject": "0"}) as (
            stack,
            server,
        ),
    ):
        return _level(stack, server, clients, seconds, stall, drain)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def run(quick: bool) -> dict[str, Any]:
    from bench.common import run_worker

    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    stall = FULL_STALL * seconds / FULL_SECONDS
    drain = 60.0 if quick else 300.0
    results: list[dict[str, Any]] = []
    targets = []
    rows = []
    for clients in LEVELS:
        try:
            r = run_worker(
                "bench.sustained",
                [str(clients), str(seconds), str(stall), str(drain)],
                timeout=seconds + drain + 600,
            )
        except Exception as error:  # a broken run is reported, never dropped
            r = {"clients": clients, "error": f"{type(error).__name__}: {str(error)[-300:]}"}
            say(f"  {clients} clients: run failed ({r['error']})")
            results.append(r)
            for name in ("no dropped requests", "no task without progress", "every task final"):
                targets.append(verdict(f"{name}, {clients} clients", "run failed", "-", None, "-", False))
            continue
        results.append(r)
        say(
            f"  {clients} clients, {seconds:.0f} s: {r['sent']} requests, {r['dropped']} dropped, "
            f"{r['created']} tasks created, {r['succeeded']} succeeded, {r['failed']} failed, "
            f"{r['not_final']} not final, {r['stalled']} unchanged for {stall:.0f} s "
            f"(longest {r['longest_unchanged_s']:.0f} s), create p50 "
            f"{_ms(r['create_p50_s'])} p99 {_ms(r['create_p99_s'])}, {r['completed_per_s']:.2f} completed/s"
        )
        rows.append(
            [
                clients,
                r["sent"],
                r["dropped"],
                r["created"],
                r["stalled"],
                f"{r['longest_unchanged_s']:.0f} s",
                r["not_final"],
                _ms(r["create_p50_s"]),
                _ms(r["create_p99_s"]),
                f"{r['completed_per_s']:.2f}",
            ]
        )
        targets.append(
            verdict(
                f"no dropped requests, {clients} clients",
                f"{r['dropped']} of {r['sent']} requests dropped (timeout 60 s, connection error, 5xx)",
                f"{r['sent']} requests in {seconds:.0f} s of load",
                r["dropped"] / max(r["sent"], 1),
                "0 dropped",
                r["dropped"] == 0,
            )
        )
        targets.append(
            verdict(
                f"no task without progress for {stall:.0f} s, {clients} clients",
                f"{r['stalled']} of {r['created']} tasks showed no change of status or progress for "
                f"{stall:.0f} s while not final",
                f"{r['created']} tasks created",
                r["stalled"] / max(r["created"], 1),
                "0 tasks" + (" (quick: 60 s scaled to the load time, 15/300)" if quick else ""),
                r["stalled"] == 0,
            )
        )
        targets.append(
            verdict(
                f"every task final, {clients} clients",
                f"{r['not_final']} of {r['created']} tasks not final {drain:.0f} s after the load stopped",
                f"{r['created']} tasks created",
                r["not_final"] / max(r["created"], 1),
                "0 not final",
                r["not_final"] == 0 and r["created"] > 0,
            )
        )
    return {
        "runs": results,
        "targets": targets,
        "tables": [
            {
                "title": f"Sustained load, {seconds:.0f} s per level (local stack, moto, 2 cores shared "
                "with the clients)",
                "columns": [
                    "clients",
                    "requests",
                    "dropped",
                    "tasks created",
                    f"unchanged {stall:.0f} s",
                    "longest unchanged",
                    "not final",
                    "create p50",
                    "create p99",
                    "completed per s",
                ],
                "rows": rows,
            }
        ],
        "notes": [
            f"Each client creates an import (1 MiB raw from a local HTTP server), GETs it every "
            f"{POLL_EVERY:.0f} s until final, then creates the next, for {seconds:.0f} s; then no new "
            f"task, and the tasks held are polled until final for at most {drain:.0f} s.",
            f"Parameters: MaxConcurrentTasks {MAX_TASKS}, MaxConcurrentTasksPerProject 0 (no per-project "
            "limit: the clients share one project); the rest as the template. A fresh stack per level.",
            "Dropped: a timeout (60 s), a connection error or a 5xx; other non-201 answers to a create "
            "are listed in the run's drop_examples but not counted.",
            "Unchanged: the longest time a task's (status, progress) stayed the same in its client's "
            "GETs while not final; the issue's window is 60 s"
            + (f", scaled to {stall:.0f} s in this quick run (15 s of load, not 300)." if quick else "."),
        ],
    }


if __name__ == "__main__":
    import sys

    args = [float(a) for a in sys.argv[1:5]]
    print_result(_one_run(int(args[0]), args[1], args[2], args[3]))
