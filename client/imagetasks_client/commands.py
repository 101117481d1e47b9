"""`openstack image task show|list|watch|cancel|create`.

`show` and `list` replace OSC's commands of the same names (this plugin's command group is loaded
after OSC's own, and the last one loaded wins): they keep OSC's columns and options and add
`progress` and `error_code`, so scripts reading OSC's output keep working. See docs/client.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from cliff import columns
from osc_lib import exceptions
from osc_lib.cli import format_columns, parseractions
from osc_lib.command import command

from . import render
from .inputs import CreateOptions, InputError, build_input
from .tasks import (
    TASK_STATUSES,
    TASK_TYPES,
    Progress,
    Task,
    TaskConflict,
    TaskNotFound,
    TasksClient,
    TasksError,
)
from .watch import follow

#: The fields OSC's `image task show` lists (owner as `owner_id`); the rest go into `properties`.
_OSC_FIELDS = ("created_at", "expires_at", "id", "input", "message", "result", "status", "type", "updated_at")
_NOT_PROPERTIES = {*_OSC_FIELDS, "owner", "self", "schema", "progress", "error_code"}

#: Exit status of `watch` (and `create --wait`) when the task ended in failure.
FAILED = 1
#: As a shell reports a command stopped by Ctrl-C.
INTERRUPTED = 130


class ProgressColumn(columns.FormattableColumn[dict[str, Any] | None]):
    """`fetch 12.0 MiB / 24.0 MiB (50%)` in a table; the service's object in JSON or YAML."""

    def human_readable(self) -> str:
        if not self._value:
            return ""
        return render.progress_summary(Progress.from_json(self._value))

    def machine_readable(self) -> dict[str, Any] | None:
        return None if self._value is None else dict(self._value)


def task_columns(task: Task) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """Name → value, sorted by name as OSC's `image task show` shows them, plus the two additions."""
    raw = task.raw
    info: dict[str, Any] = {name: raw.get(name) for name in _OSC_FIELDS}
    info["owner_id"] = raw.get("owner")
    info["properties"] = format_columns.DictColumn({k: v for k, v in raw.items() if k not in _NOT_PROPERTIES})
    info["progress"] = ProgressColumn(raw.get("progress"))
    info["error_code"] = raw.get("error_code")
    names, values = zip(*sorted(info.items()), strict=True)
    return names, values


def tasks_client(cmd: command.Command) -> TasksClient:
    """The plugin's client (`plugin.make_client`), built by OSC on first use with the user's auth;
    OSC adds the attribute, named after `plugin.API_NAME`, to its ClientManager when it loads plugins."""
    client: TasksClient = cmd.app.client_manager.imagetasks  # type: ignore[attr-defined]
    return client


def _not_found(task_id: str) -> exceptions.CommandError:
    return exceptions.CommandError(f"No task {task_id} in this project (or it has expired)")


class ShowTask(command.ShowOne):
    _description = "Display task details, with its progress and error code"

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("task", metavar="<Task ID>", help="Task to display (ID)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        try:
            task = tasks_client(self).get(parsed_args.task)
        except TaskNotFound as error:
            raise _not_found(parsed_args.task) from error
        return task_columns(task)


class ListTask(command.Lister):
    _description = "List tasks, with their progress and error codes"

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--sort-key",
            metavar="<key>",
            help="Sort by one of created_at (default), updated_at, status, type, id, expires_at, owner",
        )
        parser.add_argument("--sort-dir", metavar="<direction>", choices=["asc", "desc"], help="asc or desc")
        parser.add_argument(
            "--limit",
            metavar="<limit>",
            type=int,
            action=parseractions.NonNegativeAction,
            help="Page size (all pages are listed; --max-items caps the total)",
        )
        parser.add_argument("--marker", metavar="<marker>", help="List the tasks after this task ID")
        parser.add_argument(
            "--max-items",
            metavar="<max-items>",
            type=int,
            action=parseractions.NonNegativeAction,
            help="The most tasks to list in all",
        )
        parser.add_argument("--type", metavar="<type>", choices=TASK_TYPES, help="import, convert or export")
        parser.add_argument(
            "--status", metavar="<status>", choices=TASK_STATUSES, help="Tasks in this status"
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        filters = {
            name: str(getattr(parsed_args, name))
            for name in ("sort_key", "sort_dir", "limit", "marker", "type", "status")
            if getattr(parsed_args, name) is not None
        }
        headers = ("ID", "Type", "Status", "Owner", "Progress", "Error Code")
        client = tasks_client(self)
        rows = [
            (
                task.id,
                task.type,
                task.status,
                task.raw.get("owner"),
                ProgressColumn(task.raw.get("progress")),
                task.error_code,
            )
            for task in client.with_details(client.list_tasks(filters, max_items=parsed_args.max_items))
        ]
        return headers, rows


def watch_until_final(tasks: TasksClient, task_id: str, stream: Any) -> Task:
    """Follows the task, drawing its progress on `stream` (a bar on a terminal, lines elsewhere),
    then writes its outcome there. Ctrl-C stops watching and says the task goes on."""
    renderer = render.renderer_for(stream)
    try:
        task = follow(tasks, task_id, renderer)
    except KeyboardInterrupt:
        renderer.close()
        stream.write(
            f"Stopped watching; task {task_id} goes on (`openstack image task cancel {task_id}` stops it)\n"
        )
        raise
    except TaskNotFound as error:
        renderer.close()
        raise _not_found(task_id) from error
    except TasksError as error:
        renderer.close()
        raise exceptions.CommandError(f"Could not follow task {task_id}: {error}") from error
    renderer.close()
    for line in render.outcome_lines(task):
        stream.write(line + "\n")
    stream.flush()
    return task


class WatchTask(command.Command):
    _description = (
        "Follow a task to its end: its step, bytes, rate and percent as they change, then its result "
        "or its error code and message. Exits 0 if it succeeded, 1 if it failed; Ctrl-C stops "
        "watching and leaves the task running."
    )

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("task", metavar="<Task ID>", help="Task to watch (ID)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        try:
            task = watch_until_final(tasks_client(self), parsed_args.task, self.app.stdout)
        except KeyboardInterrupt:
            return INTERRUPTED
        return FAILED if task.status == "failure" else 0


class CancelTask(command.Command):
    _description = (
        "Cancel pending or processing tasks: each ends in failure with error code `cancelled` "
        "within seconds, leaving nothing behind"
    )

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("tasks", metavar="<Task ID>", nargs="+", help="Task(s) to cancel (ID)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        problems: list[str] = []
        for task_id in parsed_args.tasks:
            try:
                tasks_client(self).cancel(task_id)
            except TaskConflict as error:
                # The service's words name the status it ended in ("... is already success ...").
                problems.append(str(error) or f"Task {task_id} has already ended: it cannot be cancelled")
            except TaskNotFound:
                problems.append(str(_not_found(task_id)))
            except TasksError as error:
                problems.append(f"Could not cancel task {task_id}: {error}")
        if problems:
            raise exceptions.CommandError("\n".join(problems))
        return 0


class CreateTask(command.ShowOne):
    _description = (
        "Create an import, convert or export task from options (no JSON to write); "
        "--wait follows it to its end like `image task watch`"
    )

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--type", metavar="<type>", required=True, choices=TASK_TYPES, help="import, convert or export"
        )
        parser.add_argument("--image", metavar="<image>", help="convert, export: the image (ID)")
        parser.add_argument(
            "--disk-format",
            metavar="<disk-format>",
            help="convert: the target format (required); export: the file's format (default the image's); "
            "import: the image's (default --import-from-format)",
        )
        parser.add_argument(
            "--container-format", metavar="<container-format>", help="import, convert: default bare"
        )
        parser.add_argument("--name", metavar="<name>", help="import, convert: the new image's name")
        parser.add_argument("--import-from", metavar="<url>", help="import: http(s):// or s3:// source")
        parser.add_argument(
            "--import-from-format", metavar="<format>", help="import: the source's disk format"
        )
        parser.add_argument("--checksum", metavar="<md5>", help="import: the image data's MD5, checked")
        parser.add_argument(
            "--os-hash-value", metavar="<sha512>", help="import: the image data's SHA-512, checked"
        )
        parser.add_argument(
            "--property",
            metavar="<key=value>",
            dest="properties",
            action=parseractions.KeyValueAction,
            default={},
            help="import: an image property (repeat for more)",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Follow the task to its end (progress on stderr); exit 1 if it fails",
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        options = CreateOptions(
            image=parsed_args.image,
            disk_format=parsed_args.disk_format,
            container_format=parsed_args.container_format,
            name=parsed_args.name,
            import_from=parsed_args.import_from,
            import_from_format=parsed_args.import_from_format,
            checksum=parsed_args.checksum,
            os_hash_value=parsed_args.os_hash_value,
            properties=parsed_args.properties,
        )
        try:
            task_input = build_input(parsed_args.type, options)
            task = tasks_client(self).create(parsed_args.type, task_input)
        except InputError as error:
            raise exceptions.CommandError(str(error)) from error
        except TasksError as error:
            raise exceptions.CommandError(f"The task was not created: {error}") from error
        if parsed_args.wait:
            task = watch_until_final(tasks_client(self), task.id, self.app.stderr)
            self.failed = task.status == "failure"
        return task_columns(task)

    failed = False

    def run(self, parsed_args: argparse.Namespace) -> int:
        shown: int = super().run(parsed_args)
        return FAILED if self.failed else shown
