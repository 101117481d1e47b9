"""How the local ECS hook mounts a task definition's volumes: as Fargate does (local/ecs.py)."""

from __future__ import annotations

from typing import Any

from local.ecs import UNDECLARED_VOLUME, DirectoryOwner, fargate_bind_mounts

WORKER_OWNED = DirectoryOwner(10001, 10001, 0o700)


def registration(**container: Any) -> dict[str, Any]:
    """A task definition as moto's RegisterTaskDefinition takes it: the template's volumes, and more."""
    return {
        "volumes": [
            {"name": "work"},
            {"name": "cache"},
            {"name": "host", "host": {"sourcePath": "/srv"}},
            {"name": "shared", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}},
        ],
        "containerDefinitions": [
            {"name": "sidecar", "mountPoints": [{"sourceVolume": "cache", "containerPath": "/cache"}]},
            {"name": "worker", **container},
        ],
    }


def test_a_volume_whose_path_the_image_does_not_declare_is_roots_0755() -> None:
    points = [{"sourceVolume": "work", "containerPath": "/tmp"}]

    mounts = fargate_bind_mounts(registration(mountPoints=points), "worker", {"/var/data": WORKER_OWNED})

    assert [(m.volume, m.container_path, m.owner, m.read_only) for m in mounts] == [
        ("work", "/tmp", DirectoryOwner(0, 0, 0o755), False)
    ]


def test_a_declared_path_gets_the_image_directorys_owner_and_mode() -> None:
    points = [
        {"sourceVolume": "work", "containerPath": "/tmp"},
        {"sourceVolume": "cache", "containerPath": "/cache", "readOnly": True},
    ]

    mounts = fargate_bind_mounts(registration(mountPoints=points), "worker", {"/tmp": WORKER_OWNED})

    assert [(m.container_path, m.owner, m.read_only) for m in mounts] == [
        ("/tmp", WORKER_OWNED, False),
        ("/cache", UNDECLARED_VOLUME, True),
    ]


def test_only_the_containers_own_bind_volumes_are_made() -> None:
    # Host and EFS volumes are not Fargate's ephemeral storage; another container's mounts are its own.
    points = [
        {"sourceVolume": "host", "containerPath": "/srv"},
        {"sourceVolume": "shared", "containerPath": "/shared"},
    ]

    assert fargate_bind_mounts(registration(mountPoints=points), "worker", {}) == []
    assert [m.container_path for m in fargate_bind_mounts(registration(), "sidecar", {})] == ["/cache"]
