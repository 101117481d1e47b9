"""The container runner on the local stack: ECS RunTask runs the worker, as Fargate would.

moto's ECS records a task and runs nothing, and its Step Functions interpreter waits (`.sync`) for
the task to reach STOPPED. `EcsRunHook` makes RunTask start the task definition's entrypoint
(`python -m imagetasks.entrypoints.worker`) with its environment, the RunTask overrides and the task
role's credentials, against the local AWS endpoint, and marks the moto task STOPPED with the
worker's exit code when it ends. StopTask (an execution stopped) ends the worker.

With the container tier on, the worker runs in a container of the image worker/Dockerfile builds
(`local/containers.sh worker-image`: the code and qemu-img `sam build` made) on the containers'
egress-less network, with the task definition's filesystem as Fargate makes it: a read-only root
filesystem when `readonlyRootFilesystem` says so, the definition's `user` (else the image's USER),
and its task volumes as `fargate_bind_mounts` says. Otherwise it runs as a process of this
machine's Python with the repository's code: the same entrypoint either way.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.template import REGION, LocalTemplate, TaskDefinitionSpec

log = logging.getLogger("local.ecs")

REPOSITORY = Path(__file__).resolve().parent.parent
COMMON_LAYER = REPOSITORY / "layers" / "common" / "python"
WORKER_COMMAND = (sys.executable, "-m", "imagetasks.entrypoints.worker")
OUTPUT_LINES_KEPT = 20
CONTAINERS_SCRIPT = REPOSITORY / "local" / "containers.sh"
FAKE_CREDENTIALS = dict.fromkeys(
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), "testing"
)
#: The private network the runner's tasks are given (moto checks that the subnet exists).
VPC_CIDR = "10.77.0.0/16"


def create_network(ec2: Any) -> tuple[str, str]:
    """A VPC, a subnet and a security group in moto: (subnet id, security group id).

    The same ids on every start: they are template parameters, and the template's translation is
    cached by its parameters (with new ids each time, every start translated again, about 2 s, and
    left one more file in the cache). moto's ids come from its one seedable random source, put
    back as it was afterwards.
    """
    from moto.moto_api._internal import mock_random

    state = mock_random.getstate()
    mock_random.seed(VPC_CIDR)
    try:
        vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(VpcId=vpc, GroupName="imagetasks-worker", Description="worker")
    finally:
        mock_random.setstate(state)
    # As in a default VPC: the tasks' network interfaces get DNS names (which ECS describes them by).
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    return subnet, group["GroupId"]


def create_ecs_resources(template: LocalTemplate, ecs: Any) -> None:
    """The template's clusters and task definitions, registered in moto."""
    for name in template.ecs_clusters.values():
        ecs.create_cluster(clusterName=name)
    for spec in template.task_definitions.values():
        ecs.register_task_definition(**spec.registration)


def _containers_sh(command: str, failure: str) -> str:
    """What `local/containers.sh command` prints; RuntimeError(failure and its stderr) if it fails."""
    completed = subprocess.run([str(CONTAINERS_SCRIPT), command], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{failure}:\n{completed.stderr[-2000:]}")
    return completed.stdout


def build_worker_image() -> None:
    """The worker image from what `sam build` made (podman caches its layers: quick when unchanged)."""
    _containers_sh("worker-image", "the container runner's image did not build")


@dataclass(frozen=True)
class DirectoryOwner:
    """Who owns a directory, and its permission bits."""

    uid: int
    gid: int
    mode: int


#: What Fargate makes of a task volume whose path the image does not declare (platform 1.4: a bind
#: mount on the task's ephemeral storage; root-owned, mode 0755 — not writable by a non-root user).
UNDECLARED_VOLUME = DirectoryOwner(0, 0, 0o755)


@dataclass(frozen=True)
class BindMount:
    """A task volume as Fargate mounts it in the container: an empty directory with this owner."""

    volume: str
    container_path: str
    owner: DirectoryOwner
    read_only: bool = False


def fargate_bind_mounts(
    registration: Mapping[str, Any], container_name: str, declared: Mapping[str, DirectoryOwner]
) -> list[BindMount]:
    """The bind mounts Fargate gives the container: for each of its mount points on a task volume
    without host, EFS or Docker configuration, an empty directory on the task's ephemeral storage,
    root-owned 0755 unless the image declares that path as a VOLUME (`declared`: the image
    directory's owner and mode, which Fargate copies along with the directory's contents)."""
    bind_volumes = {
        str(volume["name"])
        for volume in registration.get("volumes") or []
        if not any(key in volume for key in ("host", "efsVolumeConfiguration", "dockerVolumeConfiguration"))
    }
    container = next(
        c for c in registration.get("containerDefinitions") or [] if c.get("name") == container_name
    )
    return [
        BindMount(
            volume=str(point["sourceVolume"]),
            container_path=str(point["containerPath"]),
            owner=declared.get(str(point["containerPath"]), UNDECLARED_VOLUME),
            read_only=bool(point.get("readOnly")),
        )
        for point in container.get("mountPoints") or []
        if point.get("sourceVolume") in bind_volumes
    ]


def image_volumes() -> dict[str, DirectoryOwner]:
    """The worker image's VOLUME paths, each with the owner and mode of its directory in the image."""
    declared = {}
    for line in _containers_sh("worker-volumes", "the worker image's volumes could not be read").splitlines():
        path, uid, gid, mode = line.rsplit(" ", 3)
        declared[path] = DirectoryOwner(int(uid), int(gid), int(mode, 8))
    return declared


def container_options(
    registration: Mapping[str, Any], container_name: str, mounts: list[BindMount], volumes_dir: Path
) -> list[str]:
    """`podman run` options for the task definition's container: its volumes as Fargate makes them
    (directories under `volumes_dir`, created here), its read-only root filesystem and its user."""
    container = next(
        c for c in registration.get("containerDefinitions") or [] if c.get("name") == container_name
    )
    options = []
    if container.get("readonlyRootFilesystem"):
        # podman would otherwise put tmpfs on /tmp, /var/tmp and /run: Fargate gives nothing writable.
        options += ["--read-only", "--read-only-tmpfs=false"]
    if container.get("user"):
        options += ["--user", str(container["user"])]
    for mount in mounts:
        source = volumes_dir / mount.volume
        source.mkdir(parents=True, exist_ok=True)
        os.chown(source, mount.owner.uid, mount.owner.gid)
        source.chmod(mount.owner.mode)
        spec = f"type=bind,source={source},destination={mount.container_path}"
        options += ["--mount", spec + (",ro" if mount.read_only else "")]
    return options


@dataclass
class WorkerRun:
    """One RunTask: its process, and how it ended."""

    task_arn: str
    process: subprocess.Popen[bytes] | None = None
    stopped_by_request: bool = False
    #: The worker's last lines (shown when it fails); a long step logs on and on.
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES_KEPT))


class EcsRunHook:
    """Replaces moto's RunTask and StopTask so that a task of a known task definition runs."""

    def __init__(
        self,
        definitions: Mapping[str, TaskDefinitionSpec],
        *,
        aws_url: str,
        credentials: Mapping[str, Mapping[str, str]],
        extra_env: Mapping[str, str] | None = None,
        containers: bool = False,
    ) -> None:
        self._containers = containers
        self._definitions = {spec.arn: spec for spec in definitions.values()}
        self._aws_url = aws_url
        self._credentials = credentials  # task definition logical id → its role's variables
        self._extra_env = dict(extra_env or {})
        self._runs: dict[str, WorkerRun] = {}
        self._lock = threading.Lock()
        self._originals: dict[str, Any] = {}
        self._image_volumes: dict[str, DirectoryOwner] | None = None  # read once, on the first task
        self.started = 0  # RunTask calls this hook ran (a test asserts moto still calls it)

    # ---------------------------------------------------------------- install / uninstall
    def install(self) -> None:
        from moto.ecs.models import EC2ContainerServiceBackend
        from moto.moto_api import state_manager

        if self._originals:
            return
        # A task stays RUNNING until its worker ends (moto would report it STOPPED at once).
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**12})
        original_run = self._originals["run_task"] = EC2ContainerServiceBackend.run_task
        original_stop = self._originals["stop_task"] = EC2ContainerServiceBackend.stop_task

        def run_task(backend: Any, *args: Any, **kwargs: Any) -> Any:
            tasks = original_run(backend, *args, **kwargs)
            for task in tasks:
                self._start(task)
            return tasks

        def stop_task(backend: Any, cluster_str: str, task_str: str, reason: str) -> Any:
            self.stop(task_str)
            return original_stop(backend, cluster_str, task_str, reason)

        EC2ContainerServiceBackend.run_task = run_task  # type: ignore[method-assign,assignment]
        EC2ContainerServiceBackend.stop_task = stop_task  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        from moto.ecs.models import EC2ContainerServiceBackend
        from moto.moto_api import state_manager

        for name, method in self._originals.items():
            setattr(EC2ContainerServiceBackend, name, method)
        self._originals = {}
        state_manager.unset_transition("ecs::task")
        for run in list(self._runs.values()):
            self.stop(run.task_arn)

    # ---------------------------------------------------------------- running
    def _start(self, task: Any) -> None:
        spec = self._definitions.get(task.task_definition_arn)
        if spec is None:
            log.warning(
                "RunTask of %s: not a task definition of this stack; nothing runs", task.task_definition_arn
            )
            return
        self.started += 1
        run = WorkerRun(task.task_arn)
        with self._lock:
            self._runs[task.task_arn] = run
        # What the task's container sees: the task definition's variables, then the RunTask
        # overrides, the task role's credentials and the local endpoint.
        env = dict(spec.environment)
        for container in (task.overrides or {}).get("containerOverrides") or []:
            if container.get("name") == spec.container_name:
                pairs = container.get("environment") or []
                env.update({str(pair["name"]): str(pair["value"]) for pair in pairs})
        env.update(self._extra_env)
        # The task role's credentials; without enforced IAM, moto's fake ones (it checks nothing then).
        env.update(self._credentials.get(spec.logical_id) or FAKE_CREDENTIALS)
        env.update({"AWS_ENDPOINT_URL": self._aws_url, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION})
        threading.Thread(
            target=self._run, args=(task, run, spec, env), name="local-ecs-task", daemon=True
        ).start()

    def _command(
        self, spec: TaskDefinitionSpec, env: dict[str, str], work: Path
    ) -> tuple[list[str], dict[str, str]]:
        """The worker's command line and process environment: in a container of the worker image
        (the container tier) with the task definition's filesystem as Fargate makes it, else a
        process of this machine's Python with the repository's code."""
        if self._containers:
            env_file = work / "task.env"
            env_file.touch(mode=0o600)  # it holds the task role's credentials
            env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()), encoding="utf-8")
            if self._image_volumes is None:
                self._image_volumes = image_volumes()
            mounts = fargate_bind_mounts(spec.registration, spec.container_name, self._image_volumes)
            options = container_options(spec.registration, spec.container_name, mounts, work / "volumes")
            return [str(CONTAINERS_SCRIPT), "worker", str(env_file), *options], dict(os.environ)
        host = {
            key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "IMAGETASKS_"))
        }
        return list(WORKER_COMMAND), {**host, **env, "PYTHONPATH": str(COMMON_LAYER)}

    def _run(self, task: Any, run: WorkerRun, spec: TaskDefinitionSpec, env: dict[str, str]) -> None:
        exit_code = 1
        work = Path(tempfile.mkdtemp(prefix="imagetasks-ecs-"))
        try:
            command, process_env = self._command(spec, env, work)
            run.process = subprocess.Popen(
                command, env=process_env, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            assert run.process.stdout is not None
            for line in run.process.stdout:
                text = line.decode("utf-8", "replace").rstrip()
                run.output.append(text)
                log.debug("worker %s: %s", task.id, text)
            exit_code = run.process.wait()
        except (OSError, RuntimeError) as error:
            log.error("the worker of task %s could not start: %s", task.id, error)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if exit_code != 0:
                log.warning(
                    "worker of task %s exited with %s:\n%s", task.id, exit_code, "\n".join(run.output)
                )
            for container in task.containers:
                container.exitCode = exit_code
                container.last_status = "STOPPED"
            task.stopped_reason = (
                "Task stopped by user" if run.stopped_by_request else "Essential container in task exited"
            )
            task.desired_status = "STOPPED"
            task.status = "STOPPED"
            with self._lock:
                self._runs.pop(run.task_arn, None)

    def running(self) -> list[str]:
        """The ARNs of the tasks whose worker has not ended yet."""
        with self._lock:
            return list(self._runs)

    def stop(self, task_str: str) -> None:
        with self._lock:
            run = next(
                (r for arn, r in self._runs.items() if arn == task_str or arn.endswith(f"/{task_str}")), None
            )
        if run is not None and run.process is not None and run.process.poll() is None:
            run.stopped_by_request = True
            run.process.terminate()
