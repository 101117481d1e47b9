"""The transport through openstacksdk's image proxy (what `openstack` hands the plugin), to the
in-memory tasks API served on loopback: the user's token, the versioned endpoint, bodies and errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openstack
import pytest
from imagetasks_client.tasks import TaskConflict, TaskNotFound, TasksClient
from imagetasks_client.transport import SdkTransport

from tests.client_support import OTHER_ID, TASK_ID, FakeTasksApi, MiB, progress, serving, task_json

TOKEN = "a-token"


@pytest.fixture
def api() -> FakeTasksApi:
    return FakeTasksApi()


@pytest.fixture
def client(api: FakeTasksApi) -> Iterator[TasksClient]:
    with serving(api, TOKEN) as url:
        # As `openstack --os-auth-type admin_token --os-endpoint <api>/v2 --os-token T` configures it
        connection: Any = openstack.connection.Connection(
            auth_type="admin_token", auth={"endpoint": f"{url}/v2", "token": TOKEN}, image_api_version="2"
        )
        yield TasksClient(SdkTransport(connection.image))


def test_a_long_poll_reaches_the_versioned_endpoint_with_the_token(
    client: TasksClient, api: FakeTasksApi
) -> None:
    api.lives[TASK_ID] = [task_json(), task_json(progress=progress("fetch", MiB, 2 * MiB))]

    first = client.get(TASK_ID)
    changed = client.get(TASK_ID, wait=20)

    assert first.progress is None and changed.progress is not None and changed.progress.percent == 50
    assert [params for _, _, params, _ in api.requests] == [{}, {"wait": "20"}]


def test_posts_carry_json_and_refusals_become_errors(client: TasksClient, api: FakeTasksApi) -> None:
    api.lives[OTHER_ID] = [task_json(OTHER_ID, status="success")]

    created = client.create("export", {"image_id": OTHER_ID})
    with pytest.raises(TaskConflict, match="already success"):
        client.cancel(OTHER_ID)
    with pytest.raises(TaskNotFound, match=f"Could not find task {TASK_ID}"):
        client.get(TASK_ID)

    assert created.type == "export"
    assert api.created == [{"type": "export", "input": {"image_id": OTHER_ID}}]
