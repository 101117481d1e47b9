"""Section 9, what a task waiting for a processing slot costs: state transitions, Lambda invocations
and execution history per waiting task per hour, before (polling) and after (parked on a task token).

After: measured on the local stack (moto's Step Functions interpreter, every handler in-process) with
MaxConcurrentTasks=1, one import whose source trickles (so it keeps the only slot) and N imports
waiting behind it. Over the wait, each waiting execution's history is read twice
(GetExecutionHistory) and every Lambda invocation is counted by function; the growth is
extrapolated to an hour. The one-minute slot sweeper is counted apart: it runs per deployment, not
per waiting task.

Before: computed, not measured, from the workflow as it was before the task-token queue (git
history: the definition and the template at OLD_COMMIT): each poll is the loop's states (Wait,
the TakeSlot Lambda task, the SlotTaken? choice) every SlotPollSeconds (its default then), and each
state adds its history events as Step Functions records them.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
from collections import Counter
from typing import Any

from bench.common import REPOSITORY, WORK, fmt, print_result, run_worker, say, summary, verdict

#: The last commit with the polling slot loop (its child, 68ba9c1, parked waiters on a task token).
OLD_COMMIT = "68ba9c1^"
HISTORY_LIMIT = 25_000  # Step Functions' limit on one execution's history events
#: History events Step Functions records per state visited, by state type (a Lambda task succeeding).
EVENTS_PER_STATE = {"Wait": 2, "Choice": 2, "Pass": 2, "Task": 5}


def _git_show(path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:{path}"], cwd=REPOSITORY, capture_output=True, text=True, check=True
    ).stdout


def polling_before() -> dict[str, Any]:
    """Transitions, invocations and history events per poll of the old definition, and its poll
    period (the old template's SlotPollSeconds default)."""
    from local.template import load_yaml

    template_text = _git_show("template.yaml")
    path = WORK / "old-template.yaml"
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_text(template_text)
    poll_seconds = float(load_yaml(path)["Parameters"]["SlotPollSeconds"]["Default"])
    definition_text = _git_show("statemachine/task_workflow.asl.json")
    # The substitutions are numbers in the definition; any number parses the same loop.
    definition = json.loads(re.sub(r"\$\{[A-Za-z]+\}", "1", definition_text))
    states = definition["States"]
    # The loop: from the Wait state that sends a waiting task back to its slot check.
    wait = next(name for name, s in states.items() if s["Type"] == "Wait" and "Slot" in name)
    loop, name = [], wait
    while name not in loop:
        loop.append(name)
        state = states[name]
        # No slot: a choice's default goes round again.
        name = state["Default"] if state["Type"] == "Choice" else state["Next"]
    if name != wait:
        raise RuntimeError(f"the old slot loop does not return to {wait}: {loop}")
    invocations = sum(1 for s in loop if "lambda:invoke" in states[s].get("Resource", ""))
    events = sum(EVENTS_PER_STATE[states[s]["Type"]] for s in loop)
    polls_per_hour = 3600 / poll_seconds
    return {
        "commit": OLD_COMMIT,
        "loop": loop,
        "slot_poll_seconds": poll_seconds,
        "transitions_per_poll": len(loop),
        "invocations_per_poll": invocations,
        "history_events_per_poll": events,
        "transitions_per_hour": len(loop) * polls_per_hour,
        "invocations_per_hour": invocations * polls_per_hour,
        "history_events_per_hour": events * polls_per_hour,
        "hours_to_history_limit": HISTORY_LIMIT / (events * polls_per_hour),
    }


def _history(client: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in client.get_paginator("get_execution_history").paginate(executionArn=arn):
        events.extend(page["events"])
    return events


def _running(client: Any, machine_arn: str) -> list[str]:
    arns: list[str] = []
    for page in client.get_paginator("list_executions").paginate(
        stateMachineArn=machine_arn, statusFilter="RUNNING"
    ):
        arns.extend(e["executionArn"] for e in page["executions"])
    return arns


def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


def slots_worker(waiters: int, wait_seconds: float) -> dict[str, Any]:
    """One local stack, one slot held by a trickling import, `waiters` imports parked behind it."""
    import boto3
    import requests

    import bench.image_server as image_server
    from bench.stack import create, headers, import_body, local_stack, wait_final
    from local.lambda_runtime import HandlerRunner

    invocations: Counter[str] = Counter()
    counting = threading.Event()
    invoke = HandlerRunner.invoke

    def counted(self: Any, spec: Any, event: Any) -> Any:
        if counting.is_set():
            invocations[spec.logical_id] += 1
        return invoke(self, spec, event)

    HandlerRunner.invoke = counted  # type: ignore[method-assign]
    WORK.mkdir(parents=True, exist_ok=True)
    with (
        open(WORK / "slots.log", "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
        local_stack(max_tasks=1, aws_port=0, parameters={"ImportMinTransferKiBps": "0"}) as (stack, server),
    ):
        sfn = boto3.client(
            "stepfunctions",
            endpoint_url=stack.aws_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        machine = next(iter(stack.template.state_machines.values())).arn
        auth = headers(stack)
        with requests.Session() as session:
            holder = create(session, stack, import_body(server.held_url(1024 * 1024)), auth)
            _until(image_server.held_requested.is_set, 120, "the held import never fetched its source")
            small = import_body(server.url(64 * 1024))
            waiting = [create(session, stack, small, auth) for _ in range(waiters)]

        def parked() -> bool:
            arns = _running(sfn, machine)
            if len(arns) < waiters + 1:
                return False
            # Parked: the TakeSlot task has been handed its token (TaskSubmitted) and nothing since.
            return all(_history(sfn, arn)[-1]["type"] == "TaskSubmitted" for arn in arns if arn != holder_arn)

        _until(lambda: len(_running(sfn, machine)) >= 1, 60, "no running execution")

        def fetching(arn: str) -> bool:
            entered = (e.get("stateEnteredEventDetails", {}).get("name") for e in _history(sfn, arn))
            return "ImportFetch" in entered

        holder_arn = next(arn for arn in _running(sfn, machine) if fetching(arn))
        _until(parked, 120, "the waiting executions did not park")
        waiter_arns = [arn for arn in _running(sfn, machine) if arn != holder_arn]
        time.sleep(2)  # let the last parking invocations return before counting starts
        before = {arn: _history(sfn, arn) for arn in waiter_arns}
        counting.set()
        started = time.monotonic()
        time.sleep(wait_seconds)
        counting.clear()
        seconds = time.monotonic() - started
        after = {arn: _history(sfn, arn) for arn in waiter_arns}
        statuses_during = {
            task_id: requests.get(f"{stack.api_url}/v2/tasks/{task_id}", headers=auth, timeout=60).json()[
                "status"
            ]
            for task_id in waiting
        }
        image_server.held_release.set()
        finals = [wait_final(stack, task_id, timeout=300)["status"] for task_id in [holder, *waiting]]
    per_waiter = []
    for arn in waiter_arns:
        new = after[arn][len(before[arn]) :]
        per_waiter.append(
            {
                "events_before": len(before[arn]),
                "events_during_wait": len(new),
                "transitions_during_wait": sum(1 for e in new if e["type"].endswith("StateEntered")),
                "event_types_during_wait": sorted({e["type"] for e in new}),
            }
        )
    return {
        "waiters": waiters,
        "wait_seconds": seconds,
        "per_waiter": per_waiter,
        "invocations_during_wait": dict(invocations),
        "statuses_during_wait": sorted(set(statuses_during.values())),
        "final_statuses": Counter(finals),
    }


def _plan(quick: bool) -> dict[str, Any]:
    return {"waiters": 3, "seconds": 20.0, "runs": 1} if quick else {"waiters": 8, "seconds": 60.0, "runs": 2}


def run(quick: bool) -> dict[str, Any]:
    plan = _plan(quick)
    old = polling_before()
    say(
        f"  before (computed from {OLD_COMMIT}): {old['transitions_per_hour']:.0f} transitions, "
        f"{old['invocations_per_hour']:.0f} invocations, {old['history_events_per_hour']:.0f} history "
        f"events per waiting task per hour (poll every {old['slot_poll_seconds']:g} s)"
    )
    runs = [
        run_worker("bench.slots", ["measure", str(plan["waiters"]), str(plan["seconds"])], timeout=1800)
        for _ in range(plan["runs"])
    ]
    per_hour = []
    for r in runs:
        hours = r["wait_seconds"] / 3600
        for w in r["per_waiter"]:
            per_hour.append(
                {
                    "transitions": w["transitions_during_wait"] / hours,
                    "events": w["events_during_wait"] / hours,
                }
            )
    transitions = summary([p["transitions"] for p in per_hour])
    events = summary([p["events"] for p in per_hour])
    # Invocations: those of the status function (which parks and resumes waiters) per waiter-hour;
    # the sweeper's, per deployment-hour.
    status_rate = summary(
        [
            r["invocations_during_wait"].get("TaskStatusFunction", 0)
            * 3600
            / (r["waiters"] * r["wait_seconds"])
            for r in runs
        ]
    )
    other: Counter[str] = Counter()
    for r in runs:
        for name, count in r["invocations_during_wait"].items():
            if name != "TaskStatusFunction":
                other[name] += count
    total_seconds = sum(r["wait_seconds"] for r in runs)
    other_per_hour = {name: count / (total_seconds / 3600) for name, count in other.items()}
    all_succeeded = all(
        r["final_statuses"].get("success", 0) == r["waiters"] + 1 and r["statuses_during_wait"] == ["pending"]
        for r in runs
    )
    say(
        f"  after (measured): {fmt(transitions, '', 1)} transitions, {fmt(events, '', 1)} history events "
        f"per waiting task per hour; status-function invocations per waiter-hour {fmt(status_rate, '', 1)}; "
        f"other invocations per hour {other_per_hour}"
    )
    targets = [
        verdict(
            "state transitions of a waiting task (polling)",
            f"{transitions['median']:.0f}/h per waiting task ({fmt(transitions, '', 1)})",
            f"{old['transitions_per_hour']:.0f}/h before (computed: {old['transitions_per_poll']} per poll "
            f"every {old['slot_poll_seconds']:g} s)",
            transitions["max"] / old["transitions_per_hour"],
            "zero polling transitions",
            transitions["max"] == 0 and all_succeeded,
        ),
        verdict(
            "Lambda invocations of a waiting task",
            f"{status_rate['median']:.0f}/h per waiting task",
            f"{old['invocations_per_hour']:.0f}/h before (computed)",
            status_rate["max"] / old["invocations_per_hour"],
            "zero while waiting",
            status_rate["max"] == 0,
        ),
    ]
    hours_limit = "never" if events["max"] == 0 else f"{HISTORY_LIMIT / events['max']:.1f} h"
    return {
        "before_computed": old,
        "runs": runs,
        "after_per_waiter_hour": {
            "transitions": transitions,
            "history_events": events,
            "status_function_invocations": status_rate,
        },
        "other_invocations_per_hour": other_per_hour,
        "targets": targets,
        "tables": [
            {
                "title": "One waiting task, per hour of waiting",
                "columns": [
                    "",
                    "state transitions",
                    "Lambda invocations",
                    "history events",
                    f"time to the {HISTORY_LIMIT:,}-event history limit",
                ],
                "rows": [
                    [
                        f"before: polling every {old['slot_poll_seconds']:g} s (**computed** from "
                        f"{OLD_COMMIT}'s definition)",
                        f"{old['transitions_per_hour']:,.0f}",
                        f"{old['invocations_per_hour']:,.0f}",
                        f"{old['history_events_per_hour']:,.0f}",
                        f"{old['hours_to_history_limit']:.1f} h",
                    ],
                    [
                        "after: parked on a task token (**measured**, local stack)",
                        fmt(transitions, "", 0),
                        fmt(status_rate, "", 0),
                        fmt(events, "", 0),
                        hours_limit,
                    ],
                    [
                        "1,000 waiting tasks, before → after",
                        f"{old['transitions_per_hour'] * 1000:,.0f} → {transitions['median'] * 1000:,.0f}",
                        f"{old['invocations_per_hour'] * 1000:,.0f} → {status_rate['median'] * 1000:,.0f}",
                        "",
                        "",
                    ],
                ],
            }
        ],
        "notes": [
            f"Before: computed, not measured. The definition at {OLD_COMMIT} looped "
            f"{' → '.join(old['loop'])} while no slot was free, every SlotPollSeconds "
            f"({old['slot_poll_seconds']:g} s, that template's default): {old['transitions_per_poll']} state "
            f"transitions, {old['invocations_per_poll']} Lambda invocation and "
            f"{old['history_events_per_poll']} history events per poll (Wait 2, Lambda task 5, Choice 2).",
            f"After: measured on the local stack: MaxConcurrentTasks=1, one import holding the slot (its "
            f"source sends 1 KiB every 5 s), {plan['waiters']} imports waiting for "
            f"{plan['seconds']:g} s, {plan['runs']} run(s); per waiting execution, the history events and "
            "the states entered during the wait (GetExecutionHistory before and after), and every Lambda "
            "invocation during it; extrapolated to an hour. Each waiting task's parking itself (one "
            "TaskStatusFunction invocation and 4 history events when it starts waiting, one resumption "
            "when it gets its slot) happens once, not per hour.",
            "Invocations that are not a waiting task's: the slot sweeper (a schedule, once a minute per "
            "deployment, whatever the number of waiters) and anything else running during the wait, per "
            f"hour: {', '.join(f'{k} {v:.0f}' for k, v in sorted(other_per_hour.items())) or 'none'}.",
            "All waiting tasks were still pending at the end of the wait and all succeeded once the slot "
            "was free: " + ("yes." if all_succeeded else "**no** (see runs)."),
        ],
    }


def main(argv: list[str]) -> None:

    if argv[0] == "measure":
        result = slots_worker(int(argv[1]), float(argv[2]))
    else:
        raise SystemExit(f"unknown mode {argv[0]}")
    print_result(json.loads(json.dumps(result, default=str)))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
