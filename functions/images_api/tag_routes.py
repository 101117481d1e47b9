"""Changes to an image: Glance's JSON patch (PATCH /v2/images/{image_id}) and its tags."""

from collections.abc import Callable, Sequence
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from image_views import IMAGES_PATH, NO_CONTENT_TYPE, images_table, render

from imagetasks import composition
from imagetasks.api import glance
from imagetasks.config import settings
from imagetasks.domain import clock
from imagetasks.domain.errors import NotFound
from imagetasks.domain.image_patch import (
    PATCH_MEDIA_TYPES,
    Change,
    apply_changes,
    may_modify,
    parse_changes,
    patch_dialect,
    tags_change,
)
from imagetasks.domain.images import Image
from imagetasks.observability import logger, tracer

router = APIGatewayRouter()  # type: ignore[no-untyped-call]


@router.patch(
    f"{IMAGES_PATH}/<image_id>",
    summary="Update an image (Glance's JSON patch: name, visibility, protected, tags, properties)",
)
@tracer.capture_method
def update_image(image_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(router)
    dialect = patch_dialect(router.current_event.headers.get("content-type"))
    if dialect is None:
        accepted = ", ".join(sorted(PATCH_MEDIA_TYPES))
        message = f"Send the changes as a JSON patch, with one of these content types: {accepted}."
        raise glance.HttpError(415, message, {"Accept-Patch": accepted})
    changes = parse_changes(glance.json_document(router), dialect)
    if not changes:  # Glance answers the image as it is and writes nothing
        return glance.json_response(200, render(images_table().get_visible(image_id, caller)))
    image = _changed(image_id, lambda current: changes)
    logger.info("Image updated", extra={"image_id": image_id, "changes": len(changes)})
    return glance.json_response(200, render(image))


def _changed(image_id: str, changes_of: Callable[[Image], Sequence[Change]]) -> Image:
    """The image with the changes (made from it as stored) applied and stored; made and applied
    again on a fresh read when someone else changed it meanwhile."""
    caller = glance.current_caller(router)
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
    return glance.path_parameter(router.current_event.path_parameters, "tag", matched)


@router.put(f"{IMAGES_PATH}/<image_id>/tags/<tag>", summary="Add a tag to an image")
def add_image_tag(image_id: str, tag: str) -> Response[str]:
    added = _tag_of(tag)
    _changed(image_id, lambda current: [tags_change(current, added=added)])
    return Response(204, NO_CONTENT_TYPE, "", {})


@router.delete(f"{IMAGES_PATH}/<image_id>/tags/<tag>", summary="Remove a tag from an image")
def delete_image_tag(image_id: str, tag: str) -> Response[str]:
    removed = _tag_of(tag)
    _changed(image_id, lambda current: [tags_change(current, removed=removed)])
    return Response(204, NO_CONTENT_TYPE, "", {})


@router.route(
    f"{IMAGES_PATH}/<image_id>/tags/<tag>", method=["GET", "POST", "PATCH"], include_in_schema=False
)
def image_tag_other_methods(image_id: str, tag: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("PUT, DELETE")
