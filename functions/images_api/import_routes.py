"""Glance's interoperable import into a queued image, and what a client reads before it: the import
methods, the stores and the image schemas."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from image_views import IMAGES_PATH, NO_CONTENT_TYPE, image_import, own_image

from imagetasks.api import glance
from imagetasks.api.image_schemas import image_schema_document, images_schema_document
from imagetasks.config import settings
from imagetasks.domain import clock
from imagetasks.domain.image_import import IMPORT_METHODS
from imagetasks.domain.images import DEFAULT_STORE
from imagetasks.observability import logger, tracer

router = APIGatewayRouter()  # type: ignore[no-untyped-call]


@router.post(
    f"{IMAGES_PATH}/<image_id>/import",
    summary="Import data into a queued image (web-download: from a URL, as an import task)",
    responses={
        202: {"description": "The import task was created; the image is importing"},
        409: {"description": "The image is not queued"},
    },
)
@tracer.capture_method
def import_image(image_id: str) -> Response[str]:
    caller = glance.current_caller(router)
    image = own_image(image_id, caller, "You are not permitted to import data into this image.")
    body = glance.json_body(router)
    task = image_import().start(
        image,
        body,
        settings().uploads_bucket,
        clock.now(),
        user_id=caller.user_id or None,
        request_id=glance.request_id(router),
    )
    logger.info("Image import started", extra={"image_id": image_id, "task_id": task.id})
    # Glance answers 202 with an empty body; the task is in GET /v2/images/{image_id}/tasks.
    return Response(202, NO_CONTENT_TYPE, "", {})


@router.get("/v2/info/import", summary="The interoperable import methods this cloud offers")
def import_info() -> Response[dict[str, Any]]:
    glance.current_caller(router)
    methods = {"description": "Import methods available.", "type": "array", "value": list(IMPORT_METHODS)}
    return glance.json_response(200, {"import-methods": methods})


@router.get("/v2/info/stores", summary="The stores image data is kept in (one: the images bucket)")
def stores_info() -> Response[dict[str, Any]]:
    glance.current_caller(router)
    store = {"id": DEFAULT_STORE, "description": "The images bucket", "default": "true"}
    return glance.json_response(200, {"stores": [store]})


@router.get("/v2/schemas/image", summary="The image schema")
def image_schema() -> Response[dict[str, Any]]:
    glance.current_caller(router)
    return glance.json_response(200, image_schema_document(settings()))


@router.get("/v2/schemas/images", summary="The image list schema")
def images_schema() -> Response[dict[str, Any]]:
    glance.current_caller(router)
    return glance.json_response(200, images_schema_document(settings()))
