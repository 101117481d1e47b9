"""The images: list, create (queued), show, delete, the tasks that worked on one, and Glance's
answers to the methods these paths do not take (the data's routes: data_routes)."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from image_views import IMAGES_PATH, NO_CONTENT_TYPE, images_table, objects, own_image, render, tasks_table

from imagetasks import composition
from imagetasks.api import glance
from imagetasks.config import settings
from imagetasks.domain import clock
from imagetasks.domain.errors import NotFound
from imagetasks.domain.image_create import queued_image
from imagetasks.domain.image_import import IMPORT_METHODS
from imagetasks.domain.image_listing import parse_image_list
from imagetasks.domain.images import DEFAULT_STORE
from imagetasks.observability import logger, tracer

router = APIGatewayRouter()  # type: ignore[no-untyped-call]


@router.get(IMAGES_PATH, summary="List images")
@tracer.capture_method
def list_images() -> Response[dict[str, Any]]:
    caller = glance.current_caller(router)
    params = dict(router.current_event.query_string_parameters or {})
    repeated = dict(router.current_event.multi_value_query_string_parameters or {})
    request = parse_image_list(params, caller, repeated)
    rows = images_table().list(caller, request, clock.now())
    images = [render(image) for image in images_table().images_of_rows(rows)]
    next_marker = rows[-1]["image_id"] if rows and len(rows) == request.limit else None
    # Every value of a repeated parameter, so that a client following `next` gets the same order.
    echoed = [(name, value) for name, values in repeated.items() for value in values] or list(params.items())
    links = glance.page_links(IMAGES_PATH, echoed, next_marker)
    body = {"images": images, **links, "schema": "/v2/schemas/images"}
    return glance.json_response(200, body)


@router.post(
    IMAGES_PATH,
    summary="Create a queued image (no data: fill it with POST /v2/images/{image_id}/import)",
    responses={201: {"description": "The new image, queued"}},
)
@tracer.capture_method
def create_image() -> Response[dict[str, Any]]:
    caller = glance.current_caller(router)
    body = glance.json_body(router)
    image = queued_image(
        body, caller.project_id, caller.is_admin, composition.import_rules(settings()), clock.now()
    )
    if not images_table().create(image):
        raise glance.HttpError(409, f"Image with identifier {image.id} already exists!")
    logger.info("Image created (queued)", extra={"image_id": image.id, "owner": image.owner})
    headers = {
        "Location": f"{glance.base_url(router, settings().public_base_url)}{IMAGES_PATH}/{image.id}",
        # Glance's announcement of how the new image can get data (openstacksdk imports only if
        # the method is listed here).
        "OpenStack-image-import-methods": ",".join(IMPORT_METHODS),
        "OpenStack-image-store-ids": DEFAULT_STORE,
    }
    return glance.json_response(201, render(image), headers)


@router.get(f"{IMAGES_PATH}/<image_id>", summary="Show an image")
def show_image(image_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(router)
    return glance.json_response(200, render(images_table().get_visible(image_id, caller)))


@router.delete(f"{IMAGES_PATH}/<image_id>", summary="Delete an image and its data")
@tracer.capture_method
def delete_image(image_id: str) -> Response[str]:
    caller = glance.current_caller(router)
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


@router.get(f"{IMAGES_PATH}/<image_id>/tasks", summary="The tasks that worked on an image")
def image_tasks(image_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(router)
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
                # Glance's image-task view has these of its soft-deleted tasks; a listed task here
                # is always live (an expired one is left out above).
                "deleted": False,
                "deleted_at": None,
            }
        )
    return glance.json_response(200, {"tasks": tasks})


@router.route(f"{IMAGES_PATH}/<image_id>", method=["PUT", "POST"], include_in_schema=False)
def image_other_methods(image_id: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET, PATCH, DELETE")


@router.route(IMAGES_PATH, method=["PUT", "PATCH", "DELETE"], include_in_schema=False)
def images_other_methods() -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET, POST")
