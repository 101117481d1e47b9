"""What we deploy is what we test: the `sam build` output, invoked in Lambda-like containers."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest

from local.sam_local import BASE_CONF, LAMBDA_IMAGE, NETWORK, SamLocal, missing_prerequisites
from tests.build.conftest import BUILD_DIR, require
from tests.containers.conftest import FUNCTION_CREDENTIALS, HostServer
from tests.support import ROOT

pytestmark = pytest.mark.containers


def api_event(path: str, source: str = "tasks_api_list.json") -> dict[str, Any]:
    """An API Gateway REST proxy event from events/, for another GET path."""
    event: dict[str, Any] = copy.deepcopy(json.loads((ROOT / "events" / source).read_text()))
    event.update(resource=path, path=path, queryStringParameters=None, multiValueQueryStringParameters=None)
    event["requestContext"].update(resourcePath=path, path=f"/Prod{path}")
    return event


def test_versions_from_the_built_tasks_api(container_tier: tuple[SamLocal, HostServer]) -> None:
    sam, _ = container_tier
    payload, errored, logs = sam.invoke("TasksApiFunction", api_event("/versions"))
    assert not errored, logs
    response = json.loads(payload)
    assert response["statusCode"] == 200
    versions = json.loads(response["body"])["versions"]
    assert {"id": "v2.17", "status": "CURRENT"}.items() <= versions[0].items()
    mounting = "Mounting " + str(BUILD_DIR / "TasksApiFunction")
    assert mounting in sam.wait_for_log(mounting)


def test_function_signs_with_its_own_credentials(container_tier: tuple[SamLocal, HostServer]) -> None:
    """The stand-in bootstrap fetched /credentials/TasksApiFunction; boto3 in the container signs with it."""
    sam, server = container_tier
    payload, _, logs = sam.invoke("TasksApiFunction", api_event("/v2/tasks"))
    assert "TasksApiFunction" in server.credential_requests  # AWS_LAMBDA_FUNCTION_NAME is the logical id
    assert server.access_keys, f"no signed request reached the fake endpoint: {payload}\n{logs}"
    assert set(server.access_keys) == {FUNCTION_CREDENTIALS["TasksApiFunction"]["AccessKeyId"]}
    assert json.loads(payload)["statusCode"] >= 400  # the fake endpoint refused it


def test_bootstrap_fails_closed_without_credentials(container_tier: tuple[SamLocal, HostServer]) -> None:
    sam, server = container_tier
    signed_before = len(server.access_keys)
    payload, errored, logs = sam.invoke("ImagesApiFunction", api_event("/v2/images"))
    # The bootstrap asked for the function's credentials, was refused, and the invocation failed as
    # a Lambda error (a handler that ran without credentials would answer a 5xx response instead)
    # without any signed request. (The bootstrap also says why on stderr, but podman does not always
    # pass a container's last lines on when it exits at once: 1 run in 10 under load lost them.)
    assert errored, f"{payload}\n{logs}"
    assert "ImagesApiFunction" in server.credential_requests
    assert len(server.access_keys) == signed_before


def test_qemu_layer_runs_in_the_stand_in_image() -> None:
    """The built QemuLayer (Debian 12's qemu-img and libraries) at /opt, in the trixie userland, with the
    image's LD_LIBRARY_PATH (…:/opt/lib); Python's own extensions still load next to those libraries."""
    reason = missing_prerequisites()
    require(reason is None, f"container tier not set up: {reason}")
    layer = BUILD_DIR / "QemuLayer"
    script = (
        "/opt/bin/qemu-img --version && python3 -c 'import zlib, ctypes, ssl, sqlite3; print(\"python ok\")'"
    )
    command = ["podman", "run", "--rm", "--network", NETWORK, "-v", f"{layer}:/opt:ro"]
    command += ["--entrypoint", "/bin/sh", LAMBDA_IMAGE, "-c", script]
    result = subprocess.run(
        command,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_CONF": str(BASE_CONF)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "qemu-img version" in result.stdout and "python ok" in result.stdout
