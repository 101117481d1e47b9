"""The container runner's image under the filesystem Fargate gives its task definition.

The worker runs as a non-root user on a read-only root filesystem; its only writable place is the
task volume at /tmp. Fargate makes such a volume root-owned with mode 0755 unless the image declares
the path as a VOLUME, so an image that does not declare it fails every step at its first write.
`local/ecs.py` mounts the volume the same way; these run the image with the options it computes
from the template's task definition.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local import ecs
from local.sam_local import BASE_CONF, missing_prerequisites
from local.template import LOCAL_PARAMETER_OVERRIDES, TaskDefinitionSpec, load_template
from tests.build.conftest import require
from tests.support import ROOT

pytestmark = pytest.mark.containers

#: What the worker's code does first on either runner: a working file under tempfile's directory.
PROBE = """
import json, os, tempfile
result = {"uid": os.getuid(), "tempdir": None, "root_write": None}
try:
    result["tempdir"] = tempfile.gettempdir()
    with tempfile.NamedTemporaryFile(dir=result["tempdir"]) as work:
        work.write(b"step data")
except (OSError, FileNotFoundError) as error:
    result["tempdir_error"] = str(error)
try:
    open("/written-to-root", "wb").close()
    result["root_write"] = "written"
except OSError as error:
    result["root_write"] = error.strerror
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def worker_spec() -> TaskDefinitionSpec:
    template = load_template(ROOT / "template.yaml", LOCAL_PARAMETER_OVERRIDES)
    return next(iter(template.task_definitions.values()))


@pytest.fixture(scope="module")
def worker_image() -> Iterator[None]:
    reason = missing_prerequisites()
    require(reason is None, f"container tier not set up: {reason}")
    ecs.build_worker_image()
    yield


def run_probe(spec: TaskDefinitionSpec, work: Path) -> dict[str, Any]:
    """The probe in a worker container with the options the local ECS hook gives a task."""
    mounts = ecs.fargate_bind_mounts(spec.registration, spec.container_name, ecs.image_volumes())
    options = ecs.container_options(spec.registration, spec.container_name, mounts, work / "volumes")
    env_file = work / "task.env"
    env_file.write_text("PYTHONDONTWRITEBYTECODE=1\n", encoding="utf-8")
    command = [str(ecs.CONTAINERS_SCRIPT), "worker", str(env_file), *options, "--entrypoint", "python3"]
    completed = subprocess.run(
        [*command, "--", "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _assignment(path: Path, pattern: str) -> str:
    found = re.search(pattern, path.read_text(encoding="utf-8"), re.MULTILINE)
    assert found, f"{pattern} not in {path}"
    return found.group(1)


def _layers(image: str) -> list[str]:
    inspected = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .RootFS.Layers}}", image],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_CONF": str(BASE_CONF)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert inspected.returncode == 0, inspected.stderr
    layers: list[str] = json.loads(inspected.stdout)
    return layers


def test_make_worker_image_builds_offline_from_the_container_tiers_own_base(worker_image: None) -> None:
    # Given the base the container tier debootstraps, and the one the worker image is built from
    # (the fixture built it as `make worker-image` does: worker/build-image.sh with its defaults)
    tier_base = _assignment(ROOT / "local" / "containers.sh", r"^BASE_IMAGE=(\S+)")
    worker = _assignment(ROOT / "local" / "containers.sh", r"^WORKER_IMAGE=(\S+)")
    dockerfile_base = _assignment(ROOT / "worker" / "Dockerfile", r"^ARG BASE_IMAGE=(\S+)")
    script_base = _assignment(ROOT / "worker" / "build-image.sh", r"^LOCAL_BASE=(\S+)")

    # Then they are one local image, and the worker image is that image's layers and its own on top
    # (no registry's base: the build pulled nothing)
    assert dockerfile_base == script_base == tier_base
    assert tier_base.startswith("localhost/")
    base_layers = _layers(tier_base)
    worker_layers = _layers(worker)
    assert worker_layers[: len(base_layers)] == base_layers
    assert len(worker_layers) > len(base_layers)


def test_the_task_definition_asks_for_what_fargate_makes_hard(worker_spec: TaskDefinitionSpec) -> None:
    # The premise of the other tests: a read-only root and a volume at /tmp (else they prove nothing).
    container = worker_spec.registration["containerDefinitions"][0]
    assert container["readonlyRootFilesystem"] is True
    mounts = ecs.fargate_bind_mounts(worker_spec.registration, worker_spec.container_name, {})
    assert [(m.container_path, m.owner) for m in mounts] == [("/tmp", ecs.UNDECLARED_VOLUME)]


def test_the_worker_image_declares_its_working_directory_as_a_volume_it_owns(worker_image: None) -> None:
    declared = ecs.image_volumes()

    assert "/tmp" in declared, f"the worker image declares no VOLUME /tmp: {declared}"
    owner = declared["/tmp"]
    assert (owner.uid, owner.gid) == (10001, 10001)
    assert owner.mode & 0o700 == 0o700 and not owner.mode & 0o002  # the worker's own, not world-writable


def test_a_step_on_the_container_runner_can_write_its_working_files(
    worker_image: None, worker_spec: TaskDefinitionSpec, tmp_path: Path
) -> None:
    # Given the worker image run as the task definition says, its volume mounted as Fargate mounts it
    # When the worker's code makes a working file, and tries to write outside its volume
    result = run_probe(worker_spec, tmp_path)

    # Then it runs as the image's non-root user, its working file lands in the volume at /tmp, and
    # the root filesystem refuses writes
    assert result["uid"] == 10001
    assert result["tempdir"] == "/tmp", result
    assert "tempdir_error" not in result, result
    assert result["root_write"] == "Read-only file system"
