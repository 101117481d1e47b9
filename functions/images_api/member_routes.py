"""Image sharing: an image's members (Glance's member API), and their schemas."""

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from image_views import IMAGES_PATH, NO_CONTENT_TYPE

from imagetasks import composition
from imagetasks.api import glance
from imagetasks.api.image_schemas import member_schema_document, members_schema_document
from imagetasks.config import settings
from imagetasks.domain.image_members import member_view
from imagetasks.observability import logger, tracer
from imagetasks.services.image_sharing import ImageSharing

router = APIGatewayRouter()  # type: ignore[no-untyped-call]

MEMBERS_PATH = f"{IMAGES_PATH}/<image_id>/members"


@lru_cache(maxsize=1)
def sharing() -> ImageSharing:
    return composition.image_sharing(settings())


def _member_of(matched: str) -> str:
    """The member a route names, decoded once (see tag_routes._tag_of)."""
    return glance.path_parameter(router.current_event.path_parameters, "member_id", matched)


@router.get(MEMBERS_PATH, summary="List an image's members (the owner: all; a member: itself)")
def list_members(image_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(router)
    members = sharing().members(image_id, caller)
    body = {"members": [member_view(member) for member in members], "schema": "/v2/schemas/members"}
    return glance.json_response(200, body)


@router.post(MEMBERS_PATH, summary="Share an image with a project (the owner, of a shared image)")
@tracer.capture_method
def add_member(image_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(router)
    member = sharing().add(image_id, glance.json_body(router), caller)
    logger.info("Image member added", extra={"image_id": image_id, "member_id": member.member_id})
    return glance.json_response(200, member_view(member))


@router.get(f"{MEMBERS_PATH}/<member_id>", summary="Show one member of an image")
def show_member(image_id: str, member_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(router)
    return glance.json_response(200, member_view(sharing().member(image_id, _member_of(member_id), caller)))


@router.put(f"{MEMBERS_PATH}/<member_id>", summary="Accept, reject or reset a sharing (the member)")
@tracer.capture_method
def update_member(image_id: str, member_id: str) -> Response[dict[str, Any]]:
    caller = glance.current_caller(router)
    member = sharing().set_status(image_id, _member_of(member_id), glance.json_body(router), caller)
    logger.info("Image member status set", extra={"image_id": image_id, "status": member.status.value})
    return glance.json_response(200, member_view(member))


@router.delete(f"{MEMBERS_PATH}/<member_id>", summary="Stop sharing an image with a project (the owner)")
@tracer.capture_method
def remove_member(image_id: str, member_id: str) -> Response[str]:
    caller = glance.current_caller(router)
    sharing().remove(image_id, _member_of(member_id), caller)
    logger.info("Image member removed", extra={"image_id": image_id})
    return Response(204, NO_CONTENT_TYPE, "", {})


@router.route(MEMBERS_PATH, method=["PUT", "PATCH", "DELETE"], include_in_schema=False)
def members_other_methods(image_id: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET, POST")


@router.route(f"{MEMBERS_PATH}/<member_id>", method=["POST", "PATCH"], include_in_schema=False)
def member_other_methods(image_id: str, member_id: str) -> Response[dict[str, Any]]:
    raise glance.method_not_allowed("GET, PUT, DELETE")


@router.get("/v2/schemas/member", summary="The image member schema")
def member_schema() -> Response[dict[str, Any]]:
    glance.current_caller(router)
    return glance.json_response(200, member_schema_document())


@router.get("/v2/schemas/members", summary="The image member list schema")
def members_schema() -> Response[dict[str, Any]]:
    glance.current_caller(router)
    return glance.json_response(200, members_schema_document())
