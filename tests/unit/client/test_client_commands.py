"""The commands as cliff runs them (parse, take_action, format), on an app whose client talks to the
in-memory tasks API. The real `openstack` command runs them in tests/e2e/test_osc_plugin_e2e.py."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import pytest
from imagetasks_client import commands
from imagetasks_client.tasks import TasksClient
from osc_lib import exceptions

from tests.client_support import OTHER_ID, TASK_ID, FakeTasksApi, MiB, progress, task_json


class App(SimpleNamespace):
    """What the commands use of OSC's shell: the client manager and the output streams."""

    def __init__(self, api: FakeTasksApi) -> None:
        super().__init__(
            client_manager=SimpleNamespace(imagetasks=TasksClient(api)),
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )


def run(command_class: type, api: FakeTasksApi, *argv: str) -> tuple[int, App]:
    app = App(api)
    command = command_class(app, None)
    parsed = command.get_parser("openstack image task").parse_args(list(argv))
    return command.run(parsed), app


@pytest.fixture
def api() -> FakeTasksApi:
    return FakeTasksApi()


def test_show_adds_progress_and_error_code_to_oscs_fields(api: FakeTasksApi) -> None:
    api.lives[TASK_ID] = [task_json(progress=progress("fetch", 2 * MiB, 8 * MiB), user_id="u1")]

    status, app = run(commands.ShowTask, api, TASK_ID, "-f", "json")

    shown = json.loads(app.stdout.getvalue())
    assert status == 0
    assert shown["progress"] == progress("fetch", 2 * MiB, 8 * MiB) and shown["error_code"] is None
    # OSC's field names are kept (owner as owner_id); fields OSC has no name for are `properties`
    assert sorted(shown) == sorted(
        ["created_at", "expires_at", "id", "input", "message", "owner_id", "properties", "result", "status",
         "type", "updated_at", "progress", "error_code"]
    )  # fmt: skip
    assert shown["owner_id"] == "demo-project" and shown["properties"] == {"user_id": "u1"}


def test_show_reads_progress_in_words_in_a_table(api: FakeTasksApi) -> None:
    api.lives[TASK_ID] = [task_json(progress=progress("upload", 3 * MiB, None))]

    _, app = run(commands.ShowTask, api, TASK_ID, "-c", "progress")

    assert "| progress | upload 3.0 MiB |" in app.stdout.getvalue().splitlines()


def test_show_of_an_unknown_task_is_a_command_error_naming_it(api: FakeTasksApi) -> None:
    with pytest.raises(exceptions.CommandError, match=f"No task {TASK_ID} in this project"):
        run(commands.ShowTask, api, TASK_ID)


def test_list_has_progress_and_error_code_columns_and_passes_the_filters(api: FakeTasksApi) -> None:
    api.lives[TASK_ID] = [task_json(progress=progress("convert", MiB, 4 * MiB))]
    api.lives[OTHER_ID] = [
        task_json(OTHER_ID, status="failure", error_code="timeout", message="took too long")
    ]

    _, app = run(commands.ListTask, api, "-f", "json")
    _, only_failed = run(
        commands.ListTask, api, "--status", "failure", "--type", "import", "--limit", "5", "-f", "json"
    )

    rows = {row["ID"]: row for row in json.loads(app.stdout.getvalue())}
    assert list(rows[TASK_ID]) == ["ID", "Type", "Status", "Owner", "Progress", "Error Code"]
    assert rows[TASK_ID]["Progress"] == progress("convert", MiB, 4 * MiB)
    assert rows[OTHER_ID]["Error Code"] == "timeout" and rows[OTHER_ID]["Progress"] is None
    assert [row["ID"] for row in json.loads(only_failed.stdout.getvalue())] == [OTHER_ID]
    assert ("GET", "/tasks", {"status": "failure", "type": "import", "limit": "5"}, None) in api.requests


def test_list_refuses_a_type_the_service_does_not_have(api: FakeTasksApi) -> None:
    with pytest.raises(SystemExit):
        run(commands.ListTask, api, "--type", "api_image_import")


def test_watch_reports_each_change_then_the_failure_and_exits_1(api: FakeTasksApi) -> None:
    api.lives[TASK_ID] = [
        task_json(status="pending"),
        task_json(progress=progress("fetch", 4 * MiB, 8 * MiB)),
        task_json(
            status="failure",
            progress=progress("fetch", 8 * MiB, 8 * MiB),
            error_code="image_rejected",
            message="Image data is qcow2 but disk_format says raw",
        ),
    ]

    status, app = run(commands.WatchTask, api, TASK_ID)

    assert status == 1
    lines = app.stdout.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines[:3]] == [
        "pending",
        "processing: fetch 4.0 MiB / 8.0 MiB (50%)",
        "failure: fetch 8.0 MiB / 8.0 MiB (100%)",
    ]
    assert lines[3:] == [
        f"Task {TASK_ID} failed",
        "image_rejected: Image data is qcow2 but disk_format says raw",
    ]
    assert [params for _, _, params, _ in api.requests] == [{}, {"wait": "20"}, {"wait": "20"}]


def test_watch_of_a_success_exits_0_naming_the_image(api: FakeTasksApi) -> None:
    api.lives[TASK_ID] = [task_json(status="success", result={"image_id": "img-1"})]

    status, app = run(commands.WatchTask, api, TASK_ID)

    assert status == 0
    assert app.stdout.getvalue().splitlines()[-1] == f"Task {TASK_ID} succeeded: image img-1"


def test_ctrl_c_stops_watching_leaves_the_task_alone_and_exits_130(api: FakeTasksApi) -> None:
    # Given a running task, and a user who presses Ctrl-C during the first long poll
    api.lives[TASK_ID] = [task_json(progress=progress("fetch", MiB, 8 * MiB)), task_json(status="success")]

    class Interrupted(FakeTasksApi):
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            if kwargs.get("params"):
                raise KeyboardInterrupt
            return super().request(method, path, **kwargs)

    interrupted = Interrupted(lives=api.lives)

    status, app = run(commands.WatchTask, interrupted, TASK_ID)

    assert status == 130
    assert f"Stopped watching; task {TASK_ID} goes on" in app.stdout.getvalue()
    assert all(method == "GET" for method, *_ in interrupted.requests)  # no cancel, nothing else


def test_cancel_cancels_each_and_says_which_had_already_ended(api: FakeTasksApi) -> None:
    api.lives[TASK_ID] = [task_json(status="success")]
    api.lives[OTHER_ID] = [task_json(OTHER_ID)]

    with pytest.raises(exceptions.CommandError) as refused:
        run(commands.CancelTask, api, TASK_ID, OTHER_ID)

    assert str(refused.value) == f"Task {TASK_ID} is already success and cannot be cancelled"
    assert api.cancelled == [OTHER_ID]  # the other one was cancelled all the same


def test_create_sends_the_input_built_from_options(api: FakeTasksApi) -> None:
    status, app = run(
        commands.CreateTask, api,
        "--type", "import", "--import-from", "https://images.source.invalid/d.qcow2", "--import-from-format", "qcow2",
        "--name", "d", "--property", "os_distro=debian", "-f", "json",
    )  # fmt: skip

    assert status == 0 and json.loads(app.stdout.getvalue())["status"] == "pending"
    assert api.created == [
        {
            "type": "import",
            "input": {
                "import_from": "https://images.source.invalid/d.qcow2",
                "import_from_format": "qcow2",
                "image_properties": {
                    "os_distro": "debian", "disk_format": "qcow2", "container_format": "bare", "name": "d"
                },
            },
        }
    ]  # fmt: skip


def test_create_with_wait_draws_progress_on_stderr_shows_the_end_on_stdout_and_exits_1_on_failure(
    api: FakeTasksApi,
) -> None:
    # Given a service where the created task goes on to fail
    class Failing(FakeTasksApi):
        def _create(self, body: Any) -> Any:
            reply = super()._create(body)
            self.lives[reply.body["id"]].append(
                task_json(reply.body["id"], status="failure", error_code="image_unavailable", message="gone")
            )
            return reply

    failing = Failing()

    status, app = run(
        commands.CreateTask, failing, "--type", "export", "--image", OTHER_ID, "--wait", "-f", "json"
    )

    assert status == 1
    assert json.loads(app.stdout.getvalue())["error_code"] == "image_unavailable"
    assert app.stderr.getvalue().splitlines()[-1] == "image_unavailable: gone"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--type", "convert", "--image", OTHER_ID), "A convert task needs --disk-format"),
        (("--type", "import", "--import-from", "https://x/bad", "--import-from-format", "raw"),
         "The task was not created: The given uri is not valid"),
    ],
)  # fmt: skip
def test_create_says_what_to_fix(api: FakeTasksApi, argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(exceptions.CommandError, match=message):
        run(commands.CreateTask, api, *argv)
