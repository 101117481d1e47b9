"""Another project cannot make a victim's import vanish (issue #23): it pre-creates an image under
the id an import used to imply (derived from the task id, itself predictable for an upload); the
import still ends with an image of its own that its owner sees, and the other image is untouched."""

from __future__ import annotations

import shutil
import uuid
from typing import Any

import requests

from imagetasks.domain.tasks import LEGACY_IMAGE_NAMESPACE
from tests.e2e.helpers import create_task, import_body, wait_for_task
from tests.e2e.test_upload_e2e import find_task
from tests.image_corpus import make_qcow2, require_qemu_img

VICTIM, ATTACKER = "squat-victim", "squat-attacker"


UPLOAD_VICTIM = "squat-upload-victim"


def squat(stack: Any, image_id: str) -> dict[str, Any]:
    body = {"id": image_id, "name": "squatter", "disk_format": "qcow2", "container_format": "bare"}
    response = requests.post(
        f"{stack.api_url}/v2/images", json=body, headers=stack.headers(ATTACKER), timeout=30
    )
    assert response.status_code == 201, response.text
    squatter: dict[str, Any] = response.json()
    return squatter


def assert_victim_sees_its_own_image(
    stack: Any, finished: dict[str, Any], squatter: dict[str, Any], victim: str = VICTIM
) -> None:
    assert finished["status"] == "success", finished["message"]
    image_id = finished["result"]["image_id"]
    assert image_id != squatter["id"]
    mine = requests.get(f"{stack.api_url}/v2/images/{image_id}", headers=stack.headers(victim), timeout=30)
    assert mine.status_code == 200 and mine.json()["status"] == "active" and mine.json()["owner"] == victim
    theirs = requests.get(
        f"{stack.api_url}/v2/images/{squatter['id']}", headers=stack.headers(ATTACKER), timeout=30
    ).json()
    assert theirs["status"] == "queued" and theirs["owner"] == ATTACKER


def test_a_url_import_is_not_taken_by_an_image_made_under_its_old_derived_id(
    local_stack: Any, image_server: Any
) -> None:
    require_qemu_img()
    name = f"squat-{uuid.uuid4().hex}.qcow2"
    shutil.copyfile(make_qcow2(image_server.root), image_server.root / name)
    arrived, release = image_server.hold(name)
    # Given a victim's import, held while it fetches, and an image the attacker made under the
    # id the task used to imply
    task = create_task(local_stack, import_body(image_server.url(name), "qcow2"), project=VICTIM)
    assert arrived.wait(60), "the fetch never started"
    squatter = squat(local_stack, str(uuid.uuid5(LEGACY_IMAGE_NAMESPACE, task["id"])))
    release.set()
    # When the import finishes
    finished, _ = wait_for_task(local_stack, task["id"], project=VICTIM, timeout=120)
    # Then it made its own image, which the victim sees; the attacker's image is as it was
    assert_victim_sees_its_own_image(local_stack, finished, squatter)


def test_an_upload_is_not_taken_by_an_image_made_under_its_old_derived_id(
    local_stack: Any, tmp_path: Any
) -> None:
    require_qemu_img()
    bucket = local_stack.buckets["UploadsBucket"]
    key = f"uploads/{UPLOAD_VICTIM}/squat.qcow2"
    local_stack.client("s3").put_object(Bucket=bucket, Key=key, Body=make_qcow2(tmp_path).read_bytes())
    task = find_task(local_stack, UPLOAD_VICTIM)
    squatter = squat(local_stack, str(uuid.uuid5(LEGACY_IMAGE_NAMESPACE, task["id"])))
    finished, _ = wait_for_task(local_stack, task["id"], project=UPLOAD_VICTIM, timeout=120)
    assert_victim_sees_its_own_image(local_stack, finished, squatter, UPLOAD_VICTIM)
