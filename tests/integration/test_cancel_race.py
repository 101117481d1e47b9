"""A cancel racing a task's success, on moto, many times: a cancel the API accepted always ends the
task `cancelled` with nothing left (no image, no image data, nothing staged or exported); a cancel
refused (409) always finds a success with its image or exported file.

Each round runs the two sides the way the deployment does, through the real handlers and services:
the workflow (the step, then TaskStatusFunction's succeed, or its fail and clean-up when the step
refuses) and the cancel (the tasks service, then the reconciler on the stopped execution's ABORTED
event). Where the cancel lands is chosen: before the step, just before the step's guarded write,
between the step and the success, between the success's read and its write, after the success, or
on another thread at a random moment.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagetasks import composition
from imagetasks.adapters.images_table import ImagesTable
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.auth.identity import Caller
from imagetasks.config import Settings
from imagetasks.domain import clock
from imagetasks.domain.errors import TaskAlreadyFinal
from imagetasks.domain.failures import CANCELLED_ERROR
from imagetasks.domain.images import new_image
from imagetasks.domain.tasks import TaskStatus, TaskType, new_task
from imagetasks.services.tasks import TaskService
from tests.image_corpus import make_qcow2, require_qemu_img
from tests.support import FakeLambdaContext, fresh_handler, start_processing

OWNER = "project-a"
CALLER = Caller(project_id=OWNER, user_id="u1", roles=("member",))
#: Where the cancel lands, one per round in turn.
POINTS = (
    "before_step",
    "before_guarded_write",
    "before_success",
    "inside_success",
    "after_success",
    "thread",
)


class StoppedExecution:
    """The task's execution, running until the cancel stops it (StopExecution answers at once)."""

    def __init__(self) -> None:
        self.stopped: list[str] = []

    def start(self, task_id: str, task_type: str) -> None:
        raise AssertionError("not started here")

    def stop(self, task_id: str, error: str, cause: str) -> bool:
        assert error == CANCELLED_ERROR
        self.stopped.append(task_id)
        return True


@dataclass
class Round:
    """One race: the task, what the cancel answered, and where it landed."""

    task_id: str
    point: str
    accepted: bool | None = None
    errors: list[BaseException] = field(default_factory=list)


class Race:
    def __init__(self, aws: dict[str, str]) -> None:
        self.aws = aws
        self.settings = Settings.from_environ()
        self.tasks = TasksTable(aws["TASKS_TABLE"], aws["SLOTS_TABLE"])
        self.images = ImagesTable(aws["IMAGES_TABLE"])
        self.s3 = boto3.client("s3")
        self.status = fresh_handler("task_status")
        self.reconcile = fresh_handler("reconcile")
        self.workflow = StoppedExecution()
        self.service = TaskService(
            self.tasks, self.workflow, lambda *args: None, composition.lifecycle(self.settings)
        )

    # ------------------------------------------------------------ the two sides
    def cancel(self, race: Round) -> None:
        """DELETE... POST /actions/cancel, then the reconciler on the stopped execution's event."""
        try:
            self.service.cancel(race.task_id, CALLER, clock.now())
        except TaskAlreadyFinal:
            race.accepted = False
            return
        race.accepted = True
        task = self.tasks.get(race.task_id)
        assert task is not None
        self.reconcile.lambda_handler(
            {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Step Functions Execution Status Change",
                "source": "aws.states",
                "account": "123456789012",
                "time": "2026-12-07T00:00:00Z",
                "region": "us-east-1",
                "resources": [],
                "detail": {
                    "name": race.task_id,
                    "status": "ABORTED",
                    "error": CANCELLED_ERROR,
                    "cause": task.cancel_requested,
                },
            },
            FakeLambdaContext(),
        )

    def finish(self, task_id: str, step: Callable[[], dict[str, Any]], race: Round) -> None:
        """The workflow after its step: RecordSuccess, or (the step refused) RecordFailure and CleanUp."""
        try:
            result = step()
        except Exception as refused:  # the workflow's Catch (States.ALL), after its retries
            error = {"Error": type(refused).__name__, "Cause": "{}"}
            self.status.lambda_handler(
                {"action": "fail", "task_id": task_id, "error": error}, FakeLambdaContext()
            )
            self.status.lambda_handler({"action": "clean_up", "task_id": task_id}, FakeLambdaContext())
            return
        if race.point == "before_success":
            self.cancel(race)
        with self.cancel_inside_success(race):
            self.status.lambda_handler(
                {"action": "succeed", "task_id": task_id, "result": result}, FakeLambdaContext()
            )

    @contextmanager
    def cancel_inside_success(self, race: Round) -> Iterator[None]:
        """For `inside_success`: the cancel runs after the success read the task, before it writes."""
        if race.point != "inside_success":
            yield
            return
        original = TasksTable.save_transition
        fired: list[bool] = []

        def save(table: TasksTable, before: Any, after: Any, **kwargs: Any) -> None:
            if after.status is TaskStatus.SUCCESS and not fired:
                fired.append(True)
                self.cancel(race)
            original(table, before, after, **kwargs)

        TasksTable.save_transition = save  # type: ignore[method-assign]
        try:
            yield
        finally:
            TasksTable.save_transition = original  # type: ignore[method-assign]

    @contextmanager
    def cancel_before(self, cls: type, method: str, race: Round) -> Iterator[None]:
        """For `before_guarded_write`: the cancel lands just before the step's write (or check)."""
        if race.point != "before_guarded_write":
            yield
            return
        original = getattr(cls, method)
        fired: list[bool] = []

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not fired:
                fired.append(True)
                self.cancel(race)
            return original(*args, **kwargs)

        setattr(cls, method, wrapped)
        try:
            yield
        finally:
            setattr(cls, method, original)

    def run(self, race: Round, step: Callable[[], dict[str, Any]], guarded: tuple[type, str]) -> None:
        if race.point == "before_step":
            self.cancel(race)
        thread = None
        if race.point == "thread":

            def late_cancel() -> None:
                threading.Event().wait(random.uniform(0, 0.3))
                try:
                    self.cancel(race)
                except BaseException as error:  # pragma: no cover - reported by the test
                    race.errors.append(error)

            thread = threading.Thread(target=late_cancel)
            thread.start()
        with self.cancel_before(*guarded, race):
            self.finish(race.task_id, step, race)
        if thread is not None:
            thread.join(60)
        if race.point == "after_success":
            self.cancel(race)
        assert not race.errors, race.errors

    # ------------------------------------------------------------ what is left
    def keys(self, bucket_env: str, prefix: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.aws[bucket_env], Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents", [])]

    def violations(self, race: Round, made: Callable[[], bool], left: Callable[[], list[str]]) -> list[str]:
        """What is wrong with the round's end: an accepted cancel must end `cancelled` with nothing
        left; a refused one must find a success with what it made."""
        task = self.tasks.get(race.task_id)
        assert task is not None
        found = []
        if race.accepted:
            if task.status is not TaskStatus.FAILURE or task.error_code != "cancelled":
                found.append(f"{race.point}: cancelled task ended {task.status} {task.error_code}")
            if made() or left():
                found.append(f"{race.point}: cancelled task left {left()} (image: {made()})")
        else:
            if task.status is not TaskStatus.SUCCESS or not made():
                found.append(f"{race.point}: refused cancel, task {task.status} (made: {made()})")
        return found


@pytest.fixture
def race(aws: dict[str, str]) -> Race:
    require_qemu_img()
    return Race(aws)


def processing_task(race: Race, task_type: TaskType, task_input: dict[str, Any]) -> str:
    task = new_task(task_type, task_input, OWNER)
    race.tasks.create(task)
    start_processing(race.tasks, task)
    return task.id


def test_import_register_racing_a_cancel_never_leaves_an_image_for_a_cancelled_task(
    race: Race, tmp_path: Path
) -> None:
    # Given an import, fetched, whose register step and success race a cancel, 30 times
    data = make_qcow2(tmp_path).read_bytes()
    steps = composition.import_task(race.settings)
    violations: list[str] = []
    outcomes = {True: 0, False: 0}
    for number in range(30):
        key = f"uploads/{OWNER}/{number}.qcow2"
        race.s3.put_object(Bucket=race.aws["UPLOADS_BUCKET"], Key=key, Body=data)
        task_id = processing_task(
            race,
            TaskType.IMPORT,
            {
                "import_from": f"s3://{race.aws['UPLOADS_BUCKET']}/{key}",
                "import_from_format": "qcow2",
                "image_properties": {"name": "disk", "container_format": "bare"},
            },
        )
        staged = steps.fetch(task_id)
        image_id = race.tasks.get(task_id).created_image_id  # type: ignore[union-attr]
        current = Round(task_id, POINTS[number % len(POINTS)])

        # When the cancel lands at this round's point
        race.run(current, lambda: steps.register(task_id, staged), (ImagesTable, "create"))  # noqa: B023

        # Then the task and what it made agree with what the cancel answered
        violations += race.violations(
            current,
            made=lambda: race.images.get(image_id) is not None,  # noqa: B023
            left=lambda image_id=image_id, task_id=task_id: (
                race.keys("IMAGES_BUCKET", f"images/{image_id}") + race.keys("STAGING_BUCKET", f"{task_id}/")
            ),
        )
        outcomes[bool(current.accepted)] += 1
    assert violations == []
    assert outcomes[True] >= 20 and outcomes[False] >= 5  # both outcomes were raced


def test_export_racing_a_cancel_never_leaves_a_file_for_a_cancelled_task(race: Race, tmp_path: Path) -> None:
    # Given an image, and exports of it (same format: a streamed copy) racing a cancel, 12 times
    source = image_in_bucket(race, tmp_path)
    service = fresh_handler("export_task").service()
    violations: list[str] = []
    for number in range(12):
        task_id = processing_task(race, TaskType.EXPORT, {"image_id": source})
        current = Round(task_id, POINTS[number % len(POINTS)])
        prefix = f"{OWNER}/{task_id}/"

        # When the cancel lands at this round's point (its guarded write: the last check)
        race.run(current, lambda: service.export(task_id, 900), (TasksTable, "require_processing"))  # noqa: B023

        # Then the exports bucket holds the file exactly when the export succeeded
        violations += race.violations(
            current,
            made=lambda: bool(race.keys("EXPORTS_BUCKET", prefix)),  # noqa: B023
            left=lambda: race.keys("EXPORTS_BUCKET", prefix),  # noqa: B023
        )
    assert violations == []


def test_convert_racing_a_cancel_never_leaves_an_image_for_a_cancelled_task(
    race: Race, tmp_path: Path
) -> None:
    # Given an image, and converts of it racing a cancel, 12 times
    source = image_in_bucket(race, tmp_path)
    service = fresh_handler("convert_task").service()
    service.settings = service.settings.model_copy(update={"work_root": tmp_path / "work"})
    violations: list[str] = []
    for number in range(12):
        task_id = processing_task(race, TaskType.CONVERT, {"image_id": source, "disk_format": "raw"})
        image_id = race.tasks.get(task_id).created_image_id  # type: ignore[union-attr]
        current = Round(task_id, POINTS[number % len(POINTS)])

        # When the cancel lands at this round's point
        race.run(current, lambda: service.convert(task_id, 900), (ImagesTable, "create"))  # noqa: B023

        # Then the converted image exists exactly when the convert succeeded
        violations += race.violations(
            current,
            made=lambda: race.images.get(image_id) is not None,  # noqa: B023
            left=lambda: race.keys("IMAGES_BUCKET", f"images/{image_id}"),  # noqa: B023
        )
    assert violations == []


def image_in_bucket(race: Race, tmp_path: Path) -> str:
    """An active qcow2 image of the owner, as an import leaves it; its id."""
    import hashlib

    from imagetasks.adapters.qemu import QemuImg

    path = make_qcow2(tmp_path)
    data = path.read_bytes()
    image_id = str(uuid.uuid4())
    race.s3.put_object(Bucket=race.aws["IMAGES_BUCKET"], Key=f"images/{image_id}", Body=data)
    image = new_image(
        image_id=image_id,
        owner=OWNER,
        name="source",
        disk_format="qcow2",
        container_format="bare",
        size=len(data),
        virtual_size=QemuImg().info(path, "qcow2")["virtual-size"],
        checksum=hashlib.md5(data).hexdigest(),
        os_hash_value=hashlib.sha512(data).hexdigest(),
        bucket=race.aws["IMAGES_BUCKET"],
        key=f"images/{image_id}",
        task_id="import-task",
    )
    assert race.images.create(image)
    return image_id
