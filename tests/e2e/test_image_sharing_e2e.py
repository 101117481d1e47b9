"""Image sharing with the real, unmodified clients against the local stack: glance member-create,
member-list, member-update and member-delete (python-glanceclient reads the member schema first),
and the `openstack image add project` / `image set --accept` / `image remove project` commands.

The `openstack` commands look the project up in Keystone before they call the image API, and go on
with the id they were given when Keystone refuses the lookup (what Keystone answers a project member
asking about another project). The local stack has no Keystone, and its front answers an unknown path
404 where API Gateway says 403, so the CLI is pointed at a stand-in on loopback that refuses as
Keystone does."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
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


class RefusingKeystone(BaseHTTPRequestHandler):
    """Keystone as a project member meets it when it asks about another project: 403."""

    asked: list[str] = []

    def _refuse(self) -> None:
        if self.path.rstrip("/") == "/v3":  # version discovery, as Keystone answers it
            self._answer(200, {"version": {"id": "v3.14", "status": "stable", "links": [
                {"rel": "self", "href": f"http://{self.headers['Host']}/v3/"}
            ]}})  # fmt: skip
            return
        RefusingKeystone.asked.append(f"{self.command} {self.path}")
        self._answer(
            403,
            {
                "error": {
                    "code": 403,
                    "title": "Forbidden",
                    "message": "You are not authorized to perform the requested action: identity:get_project.",
                }
            },
        )

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _refuse

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def keystone() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingKeystone)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    RefusingKeystone.asked = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v3"
    finally:
        server.shutdown()
        server.server_close()


def openstack(stack: Any, token: str, keystone: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The `openstack` CLI as tests/e2e/test_real_clients runs it (a token, the image API's versioned
    endpoint), with identity calls sent to `keystone`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OS_")}
    env["OS_IDENTITY_ENDPOINT_OVERRIDE"] = keystone
    command = [OPENSTACK, "--os-auth-type", "admin_token", "--os-endpoint", f"{stack.api_url}/v2"]
    return subprocess.run(
        [*command, "--os-token", token, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_openstack_image_add_project_accept_and_remove_project(local_stack: Any, keystone: str) -> None:
    # Given a shared image and another project
    image = shared_image(local_stack)
    member = member_project()
    owner_token, member_token = local_stack.token(OWNER), local_stack.token(member)

    # When the owner adds the project, and the project accepts
    added = openstack(local_stack, owner_token, keystone, "image", "add", "project", image["id"], member)
    assert added.returncode == 0, added.stderr + added.stdout
    assert any(member in asked for asked in RefusingKeystone.asked)  # it did ask Keystone first
    accept = openstack(
        local_stack, member_token, keystone, "image", "set", "--accept", "--project", member, image["id"]
    )
    assert accept.returncode == 0, accept.stderr + accept.stdout
    # Then the project lists it, and the owner sees the membership accepted
    assert image["id"] in listed_ids(local_stack, member)
    listed = openstack(local_stack, member_token, keystone, "image", "list", "-f", "value", "-c", "ID")
    assert listed.returncode == 0, listed.stderr
    assert image["id"] in listed.stdout.split()
    members = requests.get(
        f"{local_stack.api_url}/v2/images/{image['id']}/members",
        headers=local_stack.headers(OWNER),
        timeout=30,
    )
    assert [(m["member_id"], m["status"]) for m in members.json()["members"]] == [(member, "accepted")]

    # When the owner removes the project
    removed = openstack(local_stack, owner_token, keystone, "image", "remove", "project", image["id"], member)
    # Then the image is the owner's alone again
    assert removed.returncode == 0, removed.stderr + removed.stdout
    assert image["id"] not in listed_ids(local_stack, member, member_status="all")
