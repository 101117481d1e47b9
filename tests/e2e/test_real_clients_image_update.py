"""Changing an image with the real, unmodified clients: glance image-update and image-tag-update /
image-tag-delete (python-glanceclient builds the JSON patch from the served image schema), and
openstacksdk's update_image, against the local stack. The images are queued ones (POST /v2/images):
a patch needs no data."""

from __future__ import annotations

import uuid
from typing import Any

import requests

from tests.e2e.test_real_clients import glance, table_value

PROJECT = "image-update-project"


def queued_image(stack: Any, **fields: Any) -> dict[str, Any]:
    body = {"name": f"update-{uuid.uuid4().hex[:8]}", "disk_format": "qcow2", "container_format": "bare"}
    response = requests.post(
        f"{stack.api_url}/v2/images", json={**body, **fields}, headers=stack.headers(PROJECT), timeout=30
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def shown(stack: Any, image_id: str) -> dict[str, Any]:
    response = requests.get(
        f"{stack.api_url}/v2/images/{image_id}", headers=stack.headers(PROJECT), timeout=30
    )
    assert response.status_code == 200, response.text
    image: dict[str, Any] = response.json()
    return image


def test_glance_image_update_renames_and_sets_a_property(local_stack: Any) -> None:
    # Given a queued image with a property
    image = queued_image(local_stack, os_distro="cirros")
    token = local_stack.token(PROJECT)
    # When the CLI renames it, adds a property and replaces another
    updated = glance(
        local_stack,
        token,
        "image-update",
        "--name",
        "renamed-by-cli",
        "--property",
        "hw_disk_bus=virtio",
        "--property",
        "os_distro=ubuntu",
        image["id"],
    )
    # Then it succeeds, prints the image as changed, and the service keeps the changes
    assert updated.returncode == 0, updated.stderr + updated.stdout
    assert table_value(updated.stdout, "name") == "renamed-by-cli"
    after = shown(local_stack, image["id"])
    assert (after["name"], after["hw_disk_bus"], after["os_distro"]) == ("renamed-by-cli", "virtio", "ubuntu")
    assert after["created_at"] == image["created_at"] and after["status"] == "queued"
    # And removing the property with the CLI removes it
    removed = glance(local_stack, token, "image-update", "--remove-property", "hw_disk_bus", image["id"])
    assert removed.returncode == 0, removed.stderr + removed.stdout
    assert "hw_disk_bus" not in shown(local_stack, image["id"])


def test_glance_image_update_of_a_reserved_property_fails_with_glances_text(local_stack: Any) -> None:
    image = queued_image(local_stack)

    # The CLI refuses read-only attributes itself (its schema marks them); a property named like a reserved
    # one reaches the service, which refuses it.
    refused = glance(
        local_stack, local_stack.token(PROJECT), "image-update", "--property", "os_glance_x=1", image["id"]
    )

    assert refused.returncode != 0
    assert "os_glance_x" in refused.stderr and "reserved" in refused.stderr
    assert "os_glance_x" not in shown(local_stack, image["id"])


def test_glance_image_tag_update_and_delete(local_stack: Any) -> None:
    image = queued_image(local_stack, tags=["keep", "drop"])
    token = local_stack.token(PROJECT)

    tagged = glance(local_stack, token, "image-tag-update", image["id"], "added-by-cli")
    untagged = glance(local_stack, token, "image-tag-delete", image["id"], "drop")

    assert tagged.returncode == 0, tagged.stderr + tagged.stdout
    assert untagged.returncode == 0, untagged.stderr + untagged.stdout
    assert sorted(shown(local_stack, image["id"])["tags"]) == ["added-by-cli", "keep"]
    listed = requests.get(
        f"{local_stack.api_url}/v2/images",
        params={"tag": "added-by-cli"},
        headers=local_stack.headers(PROJECT),
        timeout=30,
    ).json()["images"]
    assert [listed_image["id"] for listed_image in listed] == [image["id"]]


def test_openstacksdk_update_image(local_stack: Any) -> None:
    import openstack

    image = queued_image(local_stack)
    conn = openstack.connection.Connection(
        auth_type="admin_token",
        auth={"endpoint": f"{local_stack.api_url}/v2", "token": local_stack.token(PROJECT)},
        image_api_version="2",
    )

    updated = conn.image.update_image(
        image["id"], name="renamed-by-sdk", min_ram=256, protected=True, os_distro="debian"
    )

    assert (updated.name, updated.min_ram, updated.is_protected) == ("renamed-by-sdk", 256, True)
    after = shown(local_stack, image["id"])
    assert (after["name"], after["min_ram"], after["protected"], after["os_distro"]) == (
        "renamed-by-sdk",
        256,
        True,
        "debian",
    )
    # A protected image is not deleted until it is unprotected again
    assert (
        requests.delete(
            f"{local_stack.api_url}/v2/images/{image['id']}", headers=local_stack.headers(PROJECT), timeout=30
        ).status_code
        == 403
    )
    conn.image.update_image(image["id"], protected=False)
    conn.image.delete_image(image["id"])
    assert conn.image.find_image(image["id"]) is None
