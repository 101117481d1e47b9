"""The deployment's configuration, read from the environment once and validated.

Every setting a deployer can choose is a template parameter that reaches the functions as an
environment variable; this is the only module that reads them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from imagetasks.domain.runners import CONTAINER, LAMBDA, RunnerLimits


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class Settings(BaseModel):
    tasks_table: str = "tasks"
    images_table: str = "images"
    slots_table: str = "task-slots"
    idempotency_table: str = "idempotency"
    state_machine_arn: str = ""
    task_ttl_hours: int = Field(default=48, ge=1)
    max_concurrent_tasks: int = Field(default=4, ge=1)
    max_concurrent_tasks_per_project: int = Field(default=0, ge=0)  # 0: no limit per project
    #: Long polls (`GET /v2/tasks/{id}?wait=N`) one project may have open at once; more answer 429.
    max_long_polls_per_project: int = Field(default=10, ge=1)
    images_bucket: str = "images"
    staging_bucket: str = "staging"
    uploads_bucket: str = "uploads"
    exports_bucket: str = "exports"
    import_s3_buckets: tuple[str, ...] = ()
    import_allowed_schemes: tuple[str, ...] = ("http", "https")
    import_allowed_ports: tuple[int, ...] = (80, 443)
    import_host_allowlist: tuple[str, ...] = ()
    import_host_denylist: tuple[str, ...] = ()
    import_allow_loopback: bool = False
    import_allow_private: bool = False
    # The slowest an import source may send, over every window of the given length (0: no minimum).
    import_min_transfer_kibps: float = Field(default=64, ge=0)
    import_transfer_window_seconds: float = Field(default=30, gt=0)
    # Compressed sources (gzip, xz, bzip2, zstd) are decompressed while they stream; the most they
    # may expand (decompressed bytes per compressed byte, 0: no limit) past the first 256 MiB.
    import_decompress: bool = True
    import_max_compression_ratio: float = Field(default=1000, ge=0)
    inspect_format: bool = True
    safety_checks: bool = True
    max_image_size_gib: float = 100
    max_virtual_size_gib: float = 2048
    allowed_disk_formats: tuple[str, ...] = (
        "raw",
        "qcow2",
        "vmdk",
        "vhd",
        "vhdx",
        "vdi",
        "iso",
        "ami",
        "ari",
        "aki",
    )
    allowed_container_formats: tuple[str, ...] = (
        "bare",
        "ovf",
        "ova",
        "aki",
        "ari",
        "ami",
        "docker",
        "compressed",
    )
    conversion_format: str = ""
    ephemeral_storage_mib: int = 10240
    # The container runner (template parameter WorkerImageUri set): its working space in GiB, 0 when
    # this deployment has none; and the largest transfer left to Lambda (0: no limit).
    runner: Literal["lambda", "container"] = "lambda"
    container_ephemeral_storage_gib: int = Field(default=0, ge=0)
    lambda_max_transfer_gib: float = Field(default=0, ge=0)
    # Only the local stack sets it (moto's server): the endpoint presigned download URLs point at.
    # Deployed, it is unset and URLs name S3's own endpoint.
    presign_endpoint_url: str = ""
    # The API's public base URL when clients reach it through a custom domain or a proxy
    # (`https://images.example.com`): links and Location headers start with it. Unset: API
    # Gateway's own domain and stage. Never the request's Host or X-Forwarded-* headers.
    public_base_url: str = ""
    # The origin whose browser pages may read the API's answers (template parameter CorsAllowOrigin:
    # "*" or one origin); empty: no CORS header.
    cors_allow_origin: str = ""
    # The EventBridge bus that hears of every task's end (name or ARN; template parameter EventBusName).
    event_bus_name: str = "default"

    @field_validator(
        "import_s3_buckets",
        "import_allowed_schemes",
        "import_host_allowlist",
        "import_host_denylist",
        "allowed_disk_formats",
        "allowed_container_formats",
        mode="before",
    )
    @classmethod
    def _split_strings(cls, value: object) -> object:
        return _csv(value) if isinstance(value, str) else value

    @field_validator("import_allowed_ports", mode="before")
    @classmethod
    def _split_ports(cls, value: object) -> object:
        return tuple(int(p) for p in _csv(value)) if isinstance(value, str) else value

    @property
    def task_ttl_seconds(self) -> int:
        return self.task_ttl_hours * 3600

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {name: env[name.upper()] for name in cls.model_fields if name.upper() in env}
        return cls.model_validate(values)


MiB = 1024**2
GiB = 1024**3


def runner_limits(settings: Settings) -> RunnerLimits:
    """What the runner this code runs on can hold (see imagetasks.domain.runners)."""
    container = settings.container_ephemeral_storage_gib * GiB
    if settings.runner == CONTAINER:
        return RunnerLimits(runner=CONTAINER, working_space_bytes=container)
    return RunnerLimits(
        runner=LAMBDA,
        working_space_bytes=settings.ephemeral_storage_mib * MiB,
        container_working_space_bytes=container,
        lambda_max_transfer_bytes=int(settings.lambda_max_transfer_gib * GiB),
    )


ENVIRONMENT_NAMES = tuple(name.upper() for name in Settings.model_fields)


def settings() -> Settings:
    """The settings of the environment this code runs in, validated once per environment.

    On Lambda a process has one environment for its whole life, so this is read once. The cache is
    keyed by the values themselves because the local stack runs every function in one process,
    each thread seeing its own function's environment."""
    return _settings_for(tuple(os.environ.get(name) for name in ENVIRONMENT_NAMES))


@lru_cache(maxsize=32)
def _settings_for(values: tuple[str | None, ...]) -> Settings:
    return Settings.from_environ(
        {name: value for name, value in zip(ENVIRONMENT_NAMES, values, strict=True) if value is not None}
    )
