"""The Glance v2 Images API: images made by tasks, and Glance's interoperable import (a queued image
created by POST /v2/images, filled by POST /v2/images/{id}/import with web-download)."""

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagetasks import composition
from imagetasks.adapters.images_table import ImagesTable
from imagetasks.adapters.s3_objects import S3Objects
from imagetasks.adapters.tasks_table import TasksTable
from imagetasks.api import glance
from imagetasks.api.image_schemas import image_schema_document, images_schema_document
from imagetasks.auth.identity import Caller
from imagetasks.config import settings
from imagetasks.domain import clock
from imagetasks.domain.errors import NotFound
from imagetasks.domain.image_create import queued_image
from imagetasks.domain.image_import import IMPORT_METHODS
from imagetasks.domain.image_listing import parse_image_list
from imagetasks.domain.image_patch import (
    PATCH_MEDIA_TYPES,
    Change,
    apply_changes,
    may_modify,
    parse_changes,
    patch_dialect,
    tags_change,
)
from imagetasks.domain.images import DEFAULT_STORE, Image, ImageStatus
from imagetasks.observability import logger, metrics, tracer
from imagetasks.services.interoperable_import import ImageImport

app = APIGatewayRestResolver()
glance.install_error_handlers(app)

IMAGES_PATH = "/v2/images"
DOWNLOAD_URL_SECONDS = 900
NO_CONTENT_TYPE = "text/html; charset=UTF-8"


# Built once per execution environment (composition builds them), reused by warm invocations.
@lru_cache(maxsize=1)
def images_table() -> ImagesTable:
    return composition.images_table(settings())


@lru_cache(maxsize=1)
def tasks_table() -> TasksTable:
    return composition.tasks_table(settings())


@lru_cache(maxsize=1)
def objects() -> S3Objects:
    return composition.objects()


@lru_cache(maxsize=1)
def image_import() -> ImageImport:
    return composition.image_import(settings())


def render(image: Image) -> dict[str, Any]:
    view: dict[str, Any] = dict(image.properties)
    view.update(
        {
            "id": image.id,
            "name": image.name,
            "status": image.status.value,
            "disk_format": image.disk_format,
            "container_format": image.container_format,
            "size": image.size,
            "virtual_size": image.virtual_size,
            "checksum": image.checksum,
            "os_hash_algo": image.os_hash_algo if image.status is ImageStatus.ACTIVE else None,
            "os_hash_value": image.os_hash_value,
            "owner": image.owner,
            "visibility": image.visibility,
            "protected": image.protected,
            "min_disk": image.min_disk,
            "min_ram": image.min_ram,
            "tags": list(image.tags),
            "os_hidden": image.os_hidden,
            "created_at": clock.to_api(image.created_at),
            "updated_at": clock.to_api(image.updated_at),
            "self": f"{IMAGES_PATH}/{image.id}",
            "file": f"{IMAGES_PATH}/{image.id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return view


@app.get(IMAGES_PATH, summary="List images")
@tracer.capture_method
def list_images() -> Response[dict[str, Any]]:
    caller = glance.current_caller(app)
    params = dict(app.current_event.query_string_parameters or {})
    request = parse_image_list(params, caller)
    rows = images_table().list(caller, request, clock.now())
    images = [render(image) for image in images_table().images_of_rows(rows)]
    next_marker = rows[-1]["image_id"] if rows and len(rows) == request.limit else None
    links = glance.page_links(IMAGES_PATH, params, next_marker)
    body = {"images": images, **links, "schema": "/v2/schemas/images"}
    return glance.json_response(200, body)


@app.post(
    IMAGES_PATH,
    summary="Create a queued image (no data: fill it with POST /v2/images/{image_id}/import)",
    responses={201: {"description": "The new image, queued"}},
)
@tracer.capture_method
def create_image() -> Response[dict[str, Any]]:
    caller = glance.current_caller(app)
    body = glance.json_body(app)
    image = queued_image(
        body, caller.project_id, caller.is_admin, composition.import_rules(settings()), clock.now()
    )
    if not images_table().create(image):
        raise glance.HttpError(409, f"Image with identifier {image.id} already exists!")
    logger.info("Image created (queued)", extra={"image_id": image.id, "owner": image.owner})
    headers = {
        "Location": f"{glance.base_url(app, settings().public_base_url)}{IMAGES_PATH}/{image.id}",
        # Glance's announcement of how the new image can get data (openstacksdk imports only if
        # the method is listed here).
        "OpenStack-image-import-methods": ",".join(IMPORT_METHODS),
        "OpenStack-image-store-ids": DEFAULT_STORE,
    }
    return glance.json_response(201, render(image), headers)


def own_image(image_id: str, caller: Caller, refusal: str) -> Image:
    """The image, for a change only its project may make: 404 when the caller cannot see it, 403
    with `refusal` for another project's public or community image."""
    image = images_table().get_visible(image_id, caller)
    if not caller.can_see(image.owner):
        raise glance.HttpError(403, refusal)
    return image


@app.get(f"{IMAGES_PATH}/<image_id>", summary="Show an image")
def show_image(image_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(app)
    return glance.json_response(200, render(images_table().get_visible(image_id, caller)))


@app.delete(f"{IMAGES_PATH}/<image_id>", summary="Delete an image and its data")
@tracer.capture_method
def delete_image(image_id: str) -> Response[str]:
    caller = glance.current_caller(app)
    image = own_image(image_id, caller, "You are not permitted to delete this image.")
    if image.protected:
        raise glance.HttpError(403, f"Image {image_id} is protected and cannot be deleted.")
    images_table().delete(image)
    if image.key:  # a queued image has no data
        objects().delete(image.bucket, image.key)
    logger.info("Image deleted", extra={"image_id": image_id, "owner": image.owner})
    # Glance's 204 says text/html with no body. Without a type of its own, API Gateway (and the local
    # front) would add application/json, and python-glanceclient fails parsing the empty body as JSON.
    return Response(204, NO_CONTENT_TYPE, "", {})


@app.get(f"{IMAGES_PATH}/<image_id>/file", summary="Download the image data (302 to a time-limited URL)")
def download_image(image_id: str) -> Response[str]:
    caller = glance.current_caller(app)
    image = images_table().get_visible(image_id, caller)
    if not image.key:
        # Glance's answer for an image without data (queued or importing): 204, no body.
        return Response(204, NO_CONTENT_TYPE, "", {})
    url = objects().presigned_get(image.bucket, image.key, DOWNLOAD_URL_SECONDS)
    return Response(302, glance.JSON, "", {"Location": url})


@app.get(f"{IMAGES_PATH}/<image_id>/tasks", summary="The tasks that worked on an image")
def image_tasks(image_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(app)
    image = images_table().get_visible(image_id, caller)
    now = clock.now()
    tasks = []
    for task_id in image.task_ids:
        try:
            task = tasks_table().get_visible(task_id, caller, now)
        except NotFound:
            continue  # expired, or another project's task on an admin-visible image
        tasks.append(
            {
                "id": task.id,
                "type": task.type.value,
                "status": task.status.value,
                "owner": task.owner,
                "input": task.input,
                "result": task.result,
                "message": task.message,
                "created_at": clock.to_api(task.created_at),
                "updated_at": clock.to_api(task.updated_at),
                "expires_at": clock.epoch_to_api(task.expires_at) if task.expires_at else None,
                "image_id": image.id,
                "request_id": task.request_id,
                "user_id": task.user_id,
            }
        )
    return glance.json_response(200, {"tasks": tasks})


@app.post(
    f"{IMAGES_PATH}/<image_id>/import",
    summary="Import data into a queued image (web-download: from a URL, as an import task)",
    responses={
        202: {"description": "The import task was created; the image is importing"},
        409: {"description": "The image is not queued"},
    },
)
@tracer.capture_method
def import_image(image_id: str) -> Response[str]:
    caller = glance.current_caller(app)
    image = own_image(image_id, caller, "You are not permitted to import data into this image.")
    body = glance.json_body(app)
    task = image_import().start(
        image,
        body,
        settings().uploads_bucket,
        clock.now(),
        user_id=caller.user_id or None,
        request_id=glance.request_id(app),
    )
    logger.info("Image import started", extra={"image_id": image_id, "task_id": task.id})
    # Glance answers 202 with an empty body; the task is in GET /v2/images/{image_id}/tasks.
    return Response(202, NO_CONTENT_TYPE, "", {})


@app.route(f"{IMAGES_PATH}/<image_id>/file", method=["PUT"], include_in_schema=False)
def upload_image_data(image_id: str) -> Response[dict[str, Any]]:
    glance.current_caller(app)
    raise glance.HttpError(
        405,
        "Image data cannot be uploaded through this API (API Gateway limits a request to 10 MB). "
        f"Upload the file to s3://{settings().uploads_bucket}/uploads/<project_id>/<file name> (an "
        "import task is created for it), or create the image and import it from a URL: "
        "POST /v2/images/{image_id}/import with the web-download method.",
        {"Allow": "GET"},
    )


@app.route(f"{IMAGES_PATH}/<image_id>/stage", method=["PUT"], include_in_schema=False)
def stage_image_data(image_id: str) -> Response[dict[str, Any]]:
    return upload_image_data(image_id)


@app.patch(
    f"{IMAGES_PATH}/<image_id>",
    summary="Update an image (Glance's JSON patch: name, visibility, protected, tags, properties)",
)
@tracer.capture_method
def update_image(image_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(app)
    dialect = patch_dialect(app.current_event.headers.get("content-type"))
    if dialect is None:
        accepted = ", ".join(sorted(PATCH_MEDIA_TYPES))
        message = f"Send the changes as a JSON patch, with one of these content types: {accepted}."
        raise glance.HttpError(415, message, {"Accept-Patch": accepted})
    changes = parse_changes(glance.json_document(app), dialect)
    if not changes:  # Glance answers the image as it is and writes nothing
        return glance.json_response(200, render(images_table().get_visible(image_id, caller)))
    image = _changed(image_id, lambda current: changes)
    logger.info("Image updated", extra={"image_id": image_id, "changes": len(changes)})
    return glance.json_response(200, render(image))


def _changed(image_id: str, changes_of: Callable[[Image], Sequence[Change]]) -> Image:
    """The image with the changes (made from it as stored) applied and stored; made and applied
    again on a fresh read when someone else changed it meanwhile."""
    caller = glance.current_caller(app)
    rules = composition.import_rules(settings())

    def change(current: Image) -> Image:
        if not images_table().visible_to(current, caller):
            raise NotFound(f"No image found with ID {image_id}")
        may_modify(current, caller)  # before the changes are made: a 403 says more than what they find
        return apply_changes(current, changes_of(current), caller, rules, clock.now())

    return images_table().update(image_id, change)


def _tag_of(matched: str) -> str:
    """The tag a tag route names, decoded once: API Gateway hands it decoded in `pathParameters`,
    while the route matched the path as the client sent it (percent-encoded)."""
    return glance.path_parameter(app.current_event.path_parameters, "tag", matched)


@app.put(f"{IMAGES_PATH}/<image_id>/tags/<tag>", summary="Add a tag to an image")
def add_image_tag(image_id: str, tag: str) -> Response[str]:
    added = _tag_of(tag)
    _changed(image_id, lambda current: [tags_change(current, added=added)])
    return Response(204, NO_CONTENT_TYPE, "", {})


@app.delete(f"{IMAGES_PATH}/<image_id>/tags/<tag>", summary="Remove a tag from an image")
def delete_image_tag(image_id: str, tag: str) -> Response[str]:
    removed = _tag_of(tag)
    _changed(image_id, lambda current: [tags_change(current, removed=removed)])
    return Response(204, NO_CONTENT_TYPE, "", {})


@app.route(f"{IMAGES_PATH}/<image_id>/tags/<tag>", method=["GET", "POST", "PATCH"], include_in_schema=False)
def image_tag_other_methods(image_id: str, tag: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("PUT, DELETE")


@app.route(f"{IMAGES_PATH}/<image_id>", method=["PUT", "POST"], include_in_schema=False)
def image_other_methods(image_id: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET, PATCH, DELETE")


@app.route(IMAGES_PATH, method=["PUT", "PATCH", "DELETE"], include_in_schema=False)
def images_other_methods() -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET, POST")


@app.get("/v2/info/import", summary="The interoperable import methods this cloud offers")
def import_info() -> Response[dict[str, Any]]:
    glance.current_caller(app)
    methods = {"description": "Import methods available.", "type": "array", "value": list(IMPORT_METHODS)}
    return glance.json_response(200, {"import-methods": methods})


@app.get("/v2/info/stores", summary="The stores image data is kept in (one: the images bucket)")
def stores_info() -> Response[dict[str, Any]]:
    glance.current_caller(app)
    store = {"id": DEFAULT_STORE, "description": "The images bucket", "default": "true"}
    return glance.json_response(200, {"stores": [store]})


@app.get("/v2/schemas/image", summary="The image schema")
def image_schema() -> Response[dict[str, Any]]:
    glance.current_caller(app)
    return glance.json_response(200, image_schema_document(settings()))


@app.get("/v2/schemas/images", summary="The image list schema")
def images_schema() -> Response[dict[str, Any]]:
    glance.current_caller(app)
    return glance.json_response(200, images_schema_document(settings()))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return glance.resolve(app, event, context)
