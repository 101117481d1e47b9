"""Every status change a task goes through after creation, in one place.

The workflow (and the reconciler) call these; each is a conditional write through the tasks
table, so concurrent or repeated calls cannot move a final task or leak a processing slot.

Slots: an execution parks on a task token (`wait_for_slot`) instead of polling. Whoever frees a slot
or parks (and the periodic sweeper, for anything lost on the way) runs `dispatch`, which gives free
slots to the oldest parked tasks — skipping a task whose project already runs its limit — and
resumes their executions. Taking a slot and marking the task processing is one transaction, so two
dispatchers cannot give one slot twice; the order is the tasks' creation order.

Events: the call that wins a task's final transition announces it (`TaskEventPublisher`), once;
a repeated or losing call finds the task final and announces nothing. The announcement is best
effort: if it cannot be sent, that is logged and counted, and the status change stands.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from imagetasks import task_metrics
from imagetasks.domain import clock
from imagetasks.domain.errors import ConcurrentUpdate, NoFreeSlot, ProjectFull
from imagetasks.domain.failures import EXECUTION_END_CODES, EXECUTION_END_MESSAGES
from imagetasks.domain.tasks import Task, TaskStatus
from imagetasks.observability import logger
from imagetasks.services.ports import Gate, LifecycleTasks, TaskEventPublisher, WorkflowRunner

ATTEMPTS = 5
#: How many of the oldest pending tasks one dispatch round looks at.
DISPATCH_WINDOW = 100
STARTED = {"started": True, "final": False}
FINAL = {"started": False, "final": True}
#: How long a final task may stay unannounced before the sweeper announces it (its finisher may
#: still be publishing; EventBridge retries take seconds).
OUTBOX_GRACE = timedelta(minutes=1)


class Lifecycle:
    def __init__(
        self,
        table: LifecycleTasks,
        ttl: timedelta,
        max_running: int,
        gate: Gate | None = None,
        max_running_per_project: int = 0,
        events: TaskEventPublisher | None = None,
        before_failure: Callable[[Task], None] | None = None,
        workflow: WorkflowRunner | None = None,
    ) -> None:
        self.table = table
        self.ttl = ttl
        self.max_running = max_running
        self.max_running_per_project = max_running_per_project  # 0: no limit per project
        self.gate = gate
        self.events = events
        # What must be undone before anyone can see a task's failure (the image an interoperable
        # import was filling goes back to queued): run before the failure is written, and again
        # on a retry, so it must be idempotent; if it raises, the failure is not written.
        self.before_failure = before_failure
        # Asked by the sweeper whether a processing task's execution still runs (`end_orphans`).
        self.workflow = workflow

    # ------------------------------------------------------------ slots

    def wait_for_slot(self, task_id: str, token: str) -> dict[str, bool]:
        """Park the execution of `task_id` until the task has a slot: resumed at once when the task
        is already processing (a retried call) or final, else when `dispatch` gives it a slot."""
        self.table.park(task_id, token)
        task = self.table.get(task_id)  # read after parking: a dispatch that ran meanwhile saw us
        if task is not None and task.status is TaskStatus.PENDING and task.cancel_requested is not None:
            task = self.fail(task_id, task.cancel_requested, "cancelled") or self.table.get(task_id)
        if task is None or task.status.is_final:
            self._resume(task_id, FINAL)
            return FINAL
        if task.status is TaskStatus.PROCESSING:
            self._resume(task_id, STARTED)
            return STARTED
        started = self.dispatch()
        return STARTED if task_id in started else {"started": False, "final": False}

    def dispatch(self, moment: datetime | None = None) -> list[str]:
        """Give free slots to the oldest parked pending tasks; the ids of the tasks started."""
        started: list[str] = []
        for _ in range(ATTEMPTS):
            free = self.max_running - self.table.running_count()
            if free <= 0:
                break
            granted = self._grant_round(free, moment or clock.now(), started)
            if not granted:
                break
        return started

    def _grant_round(self, free: int, now: datetime, started: list[str]) -> int:
        granted = 0
        full_projects: set[str] = set()
        for task_id in self.table.oldest_pending(DISPATCH_WINDOW, now):
            if granted >= free:
                break
            if self.table.parked_token(task_id) is None:
                continue  # its execution has not parked yet: it runs dispatch itself when it does
            task = self.table.get(task_id)
            if task is None or task.status is not TaskStatus.PENDING or task.owner in full_projects:
                continue
            if task.cancel_requested is not None:
                self.fail(task_id, task.cancel_requested, "cancelled")  # never started, so ends here
                continue
            try:
                self.table.save_transition(
                    task,
                    task.transition(TaskStatus.PROCESSING, now, self.ttl),
                    slot_change=1,
                    max_slots=self.max_running,
                    max_project_slots=self.max_running_per_project,
                )
            except ProjectFull:
                full_projects.add(task.owner)
                continue
            except NoFreeSlot:
                return granted
            except ConcurrentUpdate:
                continue  # another dispatcher took it, or it ended meanwhile
            logger.info("Task processing", extra={"task_id": task_id})
            task_metrics.slot_waited((now - task.created_at).total_seconds())
            started.append(task_id)
            granted += 1
            self._resume(task_id, STARTED)
        return granted

    def _resume(self, task_id: str, output: dict[str, bool]) -> None:
        """Resume the task's parked execution, if it parked; a token already used is just dropped."""
        token = self.table.parked_token(task_id)
        if token is None:
            return
        if self.gate is not None:
            self.gate.resume(token, output)
        self.table.unpark(task_id)

    def sweep(self) -> dict[str, int]:
        """What a lost message would leave behind: parked executions whose task already has its
        slot or ended (a dispatcher stopped between the two), and free slots nobody handed out."""
        resumed = 0
        for task_id in self.table.parked_tasks():
            task = self.table.get(task_id)
            if task is None or task.status.is_final:
                self._resume(task_id, FINAL)
                resumed += 1
            elif task.status is TaskStatus.PROCESSING:
                self._resume(task_id, STARTED)
                resumed += 1
        started = len(self.dispatch())
        self.report_slots()
        return {"resumed": resumed, "started": started, "announced": self.announce_missed()}

    def end_orphans(self) -> list[str]:
        """End the processing tasks whose execution ended without the end reaching the task (its
        status change event lost, or the reconciler's retries spent on it) as the reconciler would
        have: a recorded cancel as that cancel. Their slots go back. The ids of those ended."""
        if self.workflow is None:
            return []
        ended = []
        for task_id in self.table.oldest_processing(DISPATCH_WINDOW, clock.now()):
            status = self.workflow.ended(task_id)
            if status is None:
                continue  # still running: its own steps (or its event) will end it
            message = EXECUTION_END_MESSAGES.get(status, EXECUTION_END_MESSAGES["FAILED"])
            code = EXECUTION_END_CODES.get(status, EXECUTION_END_CODES["FAILED"])
            if self.fail(task_id, message, code) is not None:
                logger.warning(
                    "A task outlived its execution; ended by the sweeper",
                    extra={"task_id": task_id, "execution_status": status},
                )
                ended.append(task_id)
        return ended

    def report_slots(self) -> None:
        """Slot occupancy and how long the oldest waiting task has waited (0 when none waits): the
        sweeper's minute makes them a steady series for the dashboard and the slot-wait alarm."""
        now = clock.now()
        oldest = self.table.oldest_pending(1, now)
        task = self.table.get(oldest[0]) if oldest else None
        waited = (now - task.created_at).total_seconds() if task is not None else 0.0
        task_metrics.slots(self.table.running_count(), waited)

    def announce_missed(self) -> int:
        """Announce the ends nobody announced (the outbox): tasks final for OUTBOX_GRACE already,
        so an announcement still on its way is not sent twice. At least once, in end order."""
        if self.events is None:
            return 0
        count = 0
        for task_id in self.table.unannounced(clock.now() - OUTBOX_GRACE):
            task = self.table.get(task_id)
            if task is None or not task.status.is_final:
                continue
            self._announce(task)
            count += 1
        return count

    def succeed(self, task_id: str, result: dict[str, Any]) -> Task | None:
        return self._finish(task_id, TaskStatus.SUCCESS, result=result)

    def fail(
        self, task_id: str, message: str, code: str = "internal", *, had_workflow: bool = True
    ) -> Task | None:
        """`had_workflow=False`: no execution of the task runs (refused before it started, or its
        execution already ended), so none waits to be resumed: a parked row an ended execution left
        is the sweeper's (it can resume and remove parked rows; the API's role cannot)."""
        return self._finish(
            task_id, TaskStatus.FAILURE, message=message, code=code, release_waiter=had_workflow
        )

    def _finish(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        result: dict[str, Any] | None = None,
        message: str | None = None,
        code: str | None = None,
        release_waiter: bool = True,
    ) -> Task | None:
        """Move the task to a final status, giving back its slot if it held one. A task that is
        already final is left as it is (final states never change) and None is returned."""
        for _ in range(ATTEMPTS):
            task = self.table.get(task_id)
            if task is None or task.status.is_final:
                logger.info("Task already final; nothing to record", extra={"task_id": task_id})
                return None
            after = task.transition(
                status, clock.now(), self.ttl, result=result, message=message, error_code=code
            )
            held_slot = task.status is TaskStatus.PROCESSING
            # A success asked for a task whose cancel was recorded becomes its cancellation.
            if after.status is TaskStatus.FAILURE and self.before_failure is not None:
                self.before_failure(task)
            try:
                self.table.save_transition(
                    task, after, slot_change=-1 if held_slot else 0, event_pending=self.events is not None
                )
            except ConcurrentUpdate:
                continue
            logger.info(
                "Task finished",
                extra={"task_id": task_id, "status": after.status.value, "code": after.error_code},
            )
            task_metrics.task_finished(after.type.value, after.status is TaskStatus.SUCCESS, after.error_code)
            # Before the slot is handed on: that may raise (and be retried), and a retry finds the
            # task final and announces nothing, so announcing after it could lose the event.
            self._announce(after)
            if held_slot:
                self.dispatch()  # the freed slot goes to the oldest waiter now
            elif release_waiter:
                self._resume(task_id, FINAL)  # ended while waiting (e.g. reconciled): let it go
            return after
        raise ConcurrentUpdate(f"Task {task_id} kept changing while being finished")

    def _announce(self, task: Task) -> None:
        """Publish the end of `task`; never raises: a lost event must not undo or repeat the change."""
        if self.events is None:
            return
        try:
            self.events.task_finished(task)
        except Exception:
            logger.exception(
                "Task event not published", extra={"task_id": task.id, "status": task.status.value}
            )
            task_metrics.event_not_published()
            return  # still in the outbox: the sweeper announces it later
        try:
            self.table.announced(task.id)
        except Exception:  # the sweeper would announce it again: a duplicate, never a loss
            logger.exception("Announced task left in the outbox", extra={"task_id": task.id})
