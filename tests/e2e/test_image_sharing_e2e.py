"""Image sharing with the real, unmodified clients against the local stack: glance member-create,
member-list, member-update and member-delete (python-glanceclient reads the member schema first),
and the `openstack image add project` / `image set --accept` / `image remove project` commands.

The `openstack` commands look the project up in Keystone before they call the image API, and go on
with the id they were given when the lookup is refused. With a token and an endpoint and no Keystone,
they ask the image API's own address; API Gateway answers a path it has no resource for with its 403
"Missing Authentication Token", and so does the local front, so they run as a user types them."""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any

import requests

from tests.e2e.test_real_clients import OPENSTACK, glance

OWNER = "sharing-owner"


def shared_image(stack: Any) -> dict[str, Any]:
    body = {
        "name": f"shared-{uuid.uuid4().hex[:8]}",
        "disk_format": "qcow2",
        "container_format": "bare",
        "visibility": "shared",
    }
    response = requests.post(
        f"{stack.api_url}/v2/images", json=body, headers=stack.headers(OWNER), timeout=30
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def member_project() -> str:
    return f"sharing-member-{uuid.uuid4().hex[:8]}"


def rows(output: str) -> list[list[str]]:
    """The data rows of the CLI's table (the header row first)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith("|")
    ]


def listed_ids(stack: Any, project: str, **query: str) -> list[str]:
    response = requests.get(
        f"{stack.api_url}/v2/images", params=query, headers=stack.headers(project), timeout=30
    )
    assert response.status_code == 200, response.text
    return [image["id"] for image in response.json()["images"]]


def test_glance_member_commands_share_accept_list_and_unshare(local_stack: Any) -> None:
    # Given a shared image of the owner's project and another project
    image = shared_image(local_stack)
    member = member_project()
    owner_token, member_token = local_stack.token(OWNER), local_stack.token(member)

    # When the owner shares it with the CLI
    created = glance(local_stack, owner_token, "member-create", image["id"], member)
    # Then the member is pending, and the member does not list the image yet but can show it
    assert created.returncode == 0, created.stderr + created.stdout
    assert rows(created.stdout)[1] == [image["id"], member, "pending"]
    assert image["id"] not in listed_ids(local_stack, member)
    shown = glance(local_stack, member_token, "image-show", image["id"])
    assert shown.returncode == 0, shown.stderr

    # When the member accepts
    accepted = glance(local_stack, member_token, "member-update", image["id"], member, "accepted")
    # Then the owner's member list says so, and the member's image list has it
    assert accepted.returncode == 0, accepted.stderr + accepted.stdout
    assert rows(accepted.stdout)[1] == [image["id"], member, "accepted"]
    members = glance(local_stack, owner_token, "member-list", "--image-id", image["id"])
    assert members.returncode == 0, members.stderr
    assert rows(members.stdout)[1:] == [[image["id"], member, "accepted"]]
    member_list = glance(local_stack, member_token, "image-list")
    assert member_list.returncode == 0, member_list.stderr
    assert image["id"] in member_list.stdout

    # When the owner stops sharing
    deleted = glance(local_stack, owner_token, "member-delete", image["id"], member)
    # Then the member sees the image no more
    assert deleted.returncode == 0, deleted.stderr + deleted.stdout
    assert image["id"] not in listed_ids(local_stack, member)
    gone = glance(local_stack, member_token, "image-show", image["id"])
    assert gone.returncode != 0


def test_glance_member_update_by_the_owner_is_refused_with_glances_text(local_stack: Any) -> None:
    image = shared_image(local_stack)
    member = member_project()
    owner_token = local_stack.token(OWNER)
    assert glance(local_stack, owner_token, "member-create", image["id"], member).returncode == 0

    refused = glance(local_stack, owner_token, "member-update", image["id"], member, "accepted")

    assert refused.returncode != 0
    assert f"Not allowed to update members for image {image['id']}." in refused.stderr


def openstack(stack: Any, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The `openstack` CLI as tests/e2e/test_real_clients runs it (a token, the image API's versioned
    endpoint, nothing else)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OS_")}
    command = [OPENSTACK, "--os-auth-type", "admin_token", "--os-endpoint", f"{stack.api_url}/v2"]
    return subprocess.run(
        [*command, "--os-token", token, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_openstack_image_add_project_accept_and_remove_project(local_stack: Any) -> None:
    # Given a shared image and another project
    image = shared_image(local_stack)
    member = member_project()
    owner_token, member_token = local_stack.token(OWNER), local_stack.token(member)

    # When the owner adds the project, and the project accepts
    added = openstack(local_stack, owner_token, "image", "add", "project", image["id"], member)
    assert added.returncode == 0, added.stderr + added.stdout
    accept = openstack(
        local_stack, member_token, "image", "set", "--accept", "--project", member, image["id"]
    )
    assert accept.returncode == 0, accept.stderr + accept.stdout
    # Then the project lists it, and the owner sees the membership accepted
    assert image["id"] in listed_ids(local_stack, member)
    listed = openstack(local_stack, member_token, "image", "list", "-f", "value", "-c", "ID")
    assert listed.returncode == 0, listed.stderr
    assert image["id"] in listed.stdout.split()
    members = requests.get(
        f"{local_stack.api_url}/v2/images/{image['id']}/members",
        headers=local_stack.headers(OWNER),
        timeout=30,
    )
    assert [(m["member_id"], m["status"]) for m in members.json()["members"]] == [(member, "accepted")]

    # When the owner removes the project
    removed = openstack(local_stack, owner_token, "image", "remove", "project", image["id"], member)
    # Then the image is the owner's alone again
    assert removed.returncode == 0, removed.stderr + removed.stdout
    assert image["id"] not in listed_ids(local_stack, member, member_status="all")
