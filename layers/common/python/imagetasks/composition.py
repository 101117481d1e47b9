"""Builds the domain's collaborators from the deployment's settings (one place, shared by functions)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from imagetasks.adapters.images_table import ImagesTable
from imagetasks.adapters.long_polls import LongPollLeases
from imagetasks.adapters.task_events import TaskEvents
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.adapters.workflow import SlotGate, Workflow
from imagetasks.config import Settings, runner_limits
from imagetasks.domain.conversion import validate_convert_input, validate_export_input
from imagetasks.domain.errors import InvalidRequest
from imagetasks.domain.image_import import target_of
from imagetasks.domain.images import Image
from imagetasks.domain.import_errors import ImportRejected
from imagetasks.domain.import_filter import ImportFilter, ImportFilterSettings
from imagetasks.domain.task_input import ImportRules, check_stored_input_size, validate_import_input
from imagetasks.domain.tasks import Task, TaskStatus, TaskType
from imagetasks.services.interoperable_import import release_image
from imagetasks.services.task_lifecycle import Lifecycle
from imagetasks.services.tasks import TaskService

if TYPE_CHECKING:
    # The import and conversion machinery (oslo.utils, s3transfer, qemu-img) is imported only by
    # the functions that run it, so the API functions start quickly.
    from imagetasks.adapters.s3_objects import S3Objects
    from imagetasks.services.convert_export import ConversionService, ConversionSettings
    from imagetasks.services.fetch_and_stage import ImportSettings
    from imagetasks.services.image_sharing import ImageSharing
    from imagetasks.services.import_task import ImportTask
    from imagetasks.services.interoperable_import import ImageImport


def tasks_table(settings: Settings) -> TasksTable:
    return TasksTable(settings.tasks_table, settings.slots_table)


def long_poll_leases(settings: Settings) -> LongPollLeases:
    return LongPollLeases(settings.tasks_table, settings.max_long_polls_per_project)


def images_table(settings: Settings) -> ImagesTable:
    return ImagesTable(settings.images_table)


def objects() -> S3Objects:
    from imagetasks.adapters.s3_objects import S3Objects

    return S3Objects()


def import_filter(settings: Settings) -> ImportFilter:
    return ImportFilter(
        ImportFilterSettings(
            allowed_schemes=settings.import_allowed_schemes,
            allowed_ports=settings.import_allowed_ports,
            host_allowlist=settings.import_host_allowlist,
            host_denylist=settings.import_host_denylist,
            allow_loopback=settings.import_allow_loopback,
            allow_private=settings.import_allow_private,
            allowed_s3_buckets=settings.import_s3_buckets,
        )
    )


def import_rules(settings: Settings) -> ImportRules:
    return ImportRules(
        allowed_disk_formats=settings.allowed_disk_formats,
        allowed_container_formats=settings.allowed_container_formats,
        conversion_format=settings.conversion_format,
    )


def location_checker(settings: Settings) -> Callable[[str, str], None]:
    """The import filter as a create-time check: a refused location is a 400 with the filter's text."""
    vetting = import_filter(settings)

    def check(url: str, owner: str) -> None:
        try:
            vetting.check_location(url, owner)
        except ImportRejected as refused:
            raise InvalidRequest(refused.message) from None

    return check


def release_failed_import(settings: Settings) -> Callable[[Task], None]:
    """Before a task's failure is written: the image an interoperable import was filling is queued
    again (and the data a processing import may have written to it removed), so that an import
    retried as soon as the failure shows is accepted. Other tasks cost no call."""
    images: list[ImagesTable] = []

    def release(task: Task) -> None:
        if target_of(task) is None:
            return
        if not images:
            images.append(ImagesTable(settings.images_table))
        remove_data = None
        if task.status is TaskStatus.PROCESSING:  # a pending task has not written anything yet
            from imagetasks.adapters.s3_objects import S3Objects

            objects = S3Objects()

            def remove_data(image_id: str) -> None:
                objects.delete(settings.images_bucket, f"images/{image_id}")

        release_image(images[0], task, remove_data)

    return release


def lifecycle(settings: Settings) -> Lifecycle:
    return Lifecycle(
        tasks_table(settings),
        timedelta(seconds=settings.task_ttl_seconds),
        settings.max_concurrent_tasks,
        gate=SlotGate(),
        max_running_per_project=settings.max_concurrent_tasks_per_project,
        events=TaskEvents(settings.event_bus_name),
        before_failure=release_failed_import(settings),
        workflow=Workflow(settings.state_machine_arn),
    )


def validate_task_input(settings: Settings) -> Callable[[TaskType, dict[str, Any], str], None]:
    """The create-time input checks of every task type this deployment offers."""
    check_location = location_checker(settings)
    rules = import_rules(settings)
    images: list[ImagesTable] = []  # built on first use: import checks never touch DynamoDB
    # What a convert or export may use on the largest runner this deployment has (Lambda's /tmp,
    # or the container runner's storage): larger work is refused now.
    working_space = runner_limits(settings).largest_working_space_bytes

    def find_image(image_id: str) -> Image | None:
        if not images:
            images.append(images_table(settings))
        return images[0].get(image_id)

    def shared_with(image: Image, project_id: str) -> bool:
        return images[0].accepted_member(image, project_id)  # find_image built the table

    def validate(task_type: TaskType, task_input: dict[str, Any], owner: str) -> None:
        check_stored_input_size(task_input)
        if task_type is TaskType.IMPORT:
            validate_import_input(task_input, owner, rules, check_location)
        elif task_type is TaskType.CONVERT:
            validate_convert_input(
                task_input,
                owner,
                find_image,
                settings.allowed_disk_formats,
                settings.allowed_container_formats,
                working_space,
                shared_with=shared_with,
            )
        elif task_type is TaskType.EXPORT:
            validate_export_input(task_input, owner, find_image, working_space, shared_with=shared_with)
        else:
            raise InvalidRequest(f"Task type {task_type.value} is not available yet")

    return validate


def task_service(settings: Settings) -> TaskService:
    return TaskService(
        tasks_table(settings),
        Workflow(settings.state_machine_arn),
        validate_task_input(settings),
        lifecycle(settings),
    )


def image_import(settings: Settings) -> ImageImport:
    from imagetasks.services.interoperable_import import ImageImport

    return ImageImport(images_table(settings), task_service(settings))


def image_sharing(settings: Settings) -> ImageSharing:
    from imagetasks.services.image_sharing import ImageSharing

    return ImageSharing(images_table(settings))


GIB = 1024**3


def import_settings(settings: Settings) -> ImportSettings:
    from imagetasks.adapters.http_source import HttpSourceSettings
    from imagetasks.domain.compression import DecompressionSettings
    from imagetasks.domain.image_checks import ImageCheckSettings
    from imagetasks.services.fetch_and_stage import ImportSettings

    base = import_filter(settings).settings
    return ImportSettings(
        filter=base,
        checks=ImageCheckSettings(
            inspect_format=settings.inspect_format,
            require_format_match=settings.inspect_format,
            safety_checks=settings.safety_checks,
            max_image_size_bytes=int(settings.max_image_size_gib * GIB),
            max_virtual_size_bytes=int(settings.max_virtual_size_gib * GIB),
            allowed_disk_formats=settings.allowed_disk_formats,
            allowed_container_formats=settings.allowed_container_formats,
        ),
        http=HttpSourceSettings(
            min_bytes_per_second=settings.import_min_transfer_kibps * 1024,
            rate_window_seconds=settings.import_transfer_window_seconds,
        ),
        decompression=DecompressionSettings(
            enabled=settings.import_decompress, max_ratio=settings.import_max_compression_ratio
        ),
        runner=runner_limits(settings),
    )


def import_task(settings: Settings) -> ImportTask:
    from imagetasks.services.import_task import ImportTask, ImportTaskSettings

    return ImportTask(
        ImportTaskSettings(
            staging_bucket=settings.staging_bucket,
            images_bucket=settings.images_bucket,
            uploads_bucket=settings.uploads_bucket,
            conversion_format=settings.conversion_format,
            exports_bucket=settings.exports_bucket,
        ),
        import_settings(settings),
        tasks_table(settings),
        images_table(settings),
        objects(),
        conversion_service(settings) if settings.conversion_format else None,
    )


def conversion_settings(settings: Settings) -> ConversionSettings:
    from imagetasks.domain.image_checks import ImageCheckSettings
    from imagetasks.services.convert_export import ConversionSettings

    return ConversionSettings(
        images_bucket=settings.images_bucket,
        exports_bucket=settings.exports_bucket,
        allowed_disk_formats=settings.allowed_disk_formats,
        allowed_container_formats=settings.allowed_container_formats,
        limits=runner_limits(settings),
        image_checks=ImageCheckSettings(
            max_image_size_bytes=int(settings.max_image_size_gib * GIB),
            max_virtual_size_bytes=int(settings.max_virtual_size_gib * GIB),
            allowed_disk_formats=settings.allowed_disk_formats,
            allowed_container_formats=settings.allowed_container_formats,
        ),
    )


def conversion_service(settings: Settings) -> ConversionService:
    import boto3
    from botocore.config import Config

    from imagetasks.adapters.s3_objects import S3Objects
    from imagetasks.services.convert_export import ConversionService

    # SigV4 for the export URL: boto3 still presigns with SigV2 in us-east-1, which S3 deprecated
    # and newer regions refuse.
    s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
    return ConversionService(
        conversion_settings(settings),
        tasks_table(settings),
        images_table(settings),
        S3Objects(s3),
    )
