"""Helpers shared by the test tiers: canonical events from events/, handler loading, the template."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"


def module_environment() -> dict[str, str]:
    """This environment with the PYTHONPATH make gives the project's modules."""
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'common' / 'python'}{os.pathsep}{ROOT}"}


def run_module(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m module args` from the repository, as make runs it; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=module_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def load_handler(function: str) -> ModuleType:
    """Import functions/<function>/app.py under a unique name (every function has an app.py)."""
    folder = ROOT / "functions" / function
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    name = f"fn_{function}_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fresh_handler(function: str) -> ModuleType:
    """`load_handler`, with the handler's own cached clients and services built again (from this
    test's environment and moto) on their next use."""
    module = load_handler(function)
    folder = ROOT / "functions" / function
    # The handler's own modules: app.py and the files beside it (an API's routers, their shared views).
    own = {module.__name__} | {
        name
        for name, loaded in list(sys.modules.items())
        if getattr(loaded, "__file__", None) and Path(loaded.__file__).parent == folder
    }
    for value in vars(module).values():
        if getattr(value, "__module__", None) in own and hasattr(value, "cache_clear"):
            value.cache_clear()
    return module


#: A valid import input for handler tests (the workflow does not run in the integration tier: the
#: source is never fetched).
IMPORT_INPUT = {
    "import_from": "https://93.184.216.34/images/cirros.qcow2",
    "import_from_format": "qcow2",
    "image_properties": {"name": "cirros", "disk_format": "qcow2", "container_format": "bare"},
}


def tasks_api_handler() -> ModuleType:
    """The tasks API handler, its table and service built again for this test's moto."""
    module = load_handler("tasks_api")
    module.tasks_table.cache_clear()
    module.task_service.cache_clear()
    module.long_poll_leases.cache_clear()
    return module


def create_task(
    api: ModuleType, project: str = "project-a", task_input: dict[str, Any] | None = None
) -> dict[str, Any]:
    """POST /v2/tasks: an import task (IMPORT_INPUT unless told), as the tasks API answered it."""
    response = call(
        api,
        api_event(
            "POST", "/v2/tasks", body={"type": "import", "input": task_input or IMPORT_INPUT}, project=project
        ),
    )
    assert response["statusCode"] == 201, response["body"]
    return response["json"]


def api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    raw_body: str | None = None,
    query: dict[str, str] | None = None,
    project: str = "project-a",
    roles: str = "member",
    user: str = "user-1",
    authorized: bool = True,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The canonical REST proxy event, varied: method, path, body, query and caller."""
    event = copy.deepcopy(load_event("tasks_api_create_import.json"))
    event["httpMethod"] = method
    event["path"] = path
    event["requestContext"]["httpMethod"] = method
    # As a deployed stage sends it (the event files are shaped as the local front sends them): the
    # stage in the path, API Gateway's own domain name, so links are the deployed API's.
    event["requestContext"]["path"] = f"/v1{path}"
    event["requestContext"]["domainName"] = "abcdef1234.execute-api.us-east-1.amazonaws.com"
    if raw_body is not None:
        event["body"] = raw_body
    else:
        event["body"] = None if body is None else json.dumps(body)
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    if headers:
        event["headers"].update(headers)
        event["multiValueHeaders"].update({k: [v] for k, v in headers.items()})
    if authorized:
        event["requestContext"]["authorizer"] = {
            "principalId": user,
            "project_id": project,
            "user_id": user,
            "roles": roles,
        }
    else:
        event["requestContext"].pop("authorizer", None)
    return event


def images_api_handler() -> ModuleType:
    """The images API handler, its tables, object store and import service built again for this
    test's moto."""
    return fresh_handler("images_api")


class CallCounter:
    """Counts the DynamoDB calls a client makes, through botocore's event hooks."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.dynamodb.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)


def header(response: dict[str, Any], name: str) -> str | None:
    """A response header, whatever its case and whether the handler put it in headers or
    multiValueHeaders."""
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower():
            return str(values[0])
    return next((v for k, v in (response.get("headers") or {}).items() if k.lower() == name.lower()), None)


def query_of(link: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(link).query))


class FakeLambdaContext:
    """The attributes Powertools reads from a Lambda context."""

    function_name = "test-function"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def call(handler_module: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    """Invoke a handler and decode a JSON body, as API Gateway's client would see it."""
    response: dict[str, Any] = handler_module.lambda_handler(event, FakeLambdaContext())
    if isinstance(response, dict) and isinstance(response.get("body"), str) and response["body"]:
        try:
            response["json"] = json.loads(response["body"])
        except ValueError:
            response["json"] = None
    return response


# ------------------------------------------------------------------ the images API, as a client calls it
CREATE_IMAGE = {
    "name": "cirros",
    "disk_format": "qcow2",
    "container_format": "bare",
    "visibility": "private",
    "tags": ["a", "b"],
    "min_disk": 1,
    "min_ram": 64,
    "protected": False,
    "os_distro": "cirros",
}
PATCH_V21 = "application/openstack-images-v2.1-json-patch"


def create_image(
    images: Any, body: dict[str, Any] | None = None, project: str = "project-a", roles: str = "member"
) -> dict[str, Any]:
    response = call(
        images, api_event("POST", "/v2/images", body=body or CREATE_IMAGE, project=project, roles=roles)
    )
    assert response["statusCode"] == 201, response["body"]
    return response["json"]


def show(images: Any, image_id: str) -> dict[str, Any]:
    return call(images, api_event("GET", f"/v2/images/{image_id}"))["json"]


def patch(
    images: Any,
    image_id: str,
    body: Any,
    *,
    content_type: str = PATCH_V21,
    project: str = "project-a",
    roles: str = "member",
) -> dict[str, Any]:
    event = api_event(
        "PATCH",
        f"/v2/images/{image_id}",
        body=body,
        project=project,
        roles=roles,
        headers={"Content-Type": content_type},
    )
    return call(images, event)


def listed(images: Any, project: str = "project-a", **query: str) -> list[str]:
    """The ids of the images GET /v2/images lists for the project."""
    response = call(images, api_event("GET", "/v2/images", project=project, query=query or None))
    assert response["statusCode"] == 200, response["body"]
    return [image["id"] for image in response["json"]["images"]]


def start_processing(table: Any, task: Any) -> Any:
    """Move a stored pending task to `processing`, as the workflow's TakeSlot does: processing steps
    record their work only for a task that is still processing. `table` is a TasksTable."""
    from datetime import timedelta

    from imagetasks.domain import clock
    from imagetasks.domain.tasks import TaskStatus

    started = task.transition(TaskStatus.PROCESSING, clock.now(), timedelta(hours=1))
    table.save_transition(task, started)
    return started


def fail_task(table: Any, task_id: str, message: str = "The task's processing step took too long") -> None:
    """End a task in failure the way the workflow or the reconciler does, while a step may still run."""
    from datetime import timedelta

    from imagetasks.services.task_lifecycle import Lifecycle

    assert Lifecycle(table, timedelta(hours=1), 10).fail(task_id, message) is not None


def object_keys(bucket: str) -> list[str]:
    """The keys in a bucket of this test's moto."""
    import boto3

    return [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]


def created_image_id(task_id: str, table: str | None = None, client: Any = None) -> str:
    """The (random) id of the image the task creates, as its stored task holds it."""
    import os

    import boto3

    item = (client or boto3.client("dynamodb")).get_item(
        TableName=table or os.environ["TASKS_TABLE"], Key={"id": {"S": task_id}}
    )["Item"]
    return str(item["new_image_id"]["S"])


def process_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its reaper is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def processes_gone(pids: list[int], seconds: float = 10) -> bool:
    """Whether every process is gone within `seconds`: SIGKILL is delivered, not awaited, and a
    killed process dies a moment later on a loaded machine."""
    deadline = time.monotonic() + seconds
    while any(process_running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
