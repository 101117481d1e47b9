"""An image's data: its download (a time-limited URL), and the uploads this API refuses (data comes
through S3 or a web-download import)."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from image_views import IMAGES_PATH, NO_CONTENT_TYPE, images_table, objects

from imagetasks.api import glance
from imagetasks.auth.identity import Caller
from imagetasks.config import settings
from imagetasks.domain.images import ImageStatus
from imagetasks.observability import logger, tracer

router = APIGatewayRouter()  # type: ignore[no-untyped-call]

DOWNLOAD_URL_SECONDS = 900


@router.get(f"{IMAGES_PATH}/<image_id>/file", summary="Download the image data (302 to a time-limited URL)")
def download_image(image_id: str) -> Response[str]:
    caller = glance.current_caller(router)
    image = images_table().get_visible(image_id, caller)
    if not image.key:
        # Glance's answer for an image without data (queued or importing): 204, no body.
        return Response(204, NO_CONTENT_TYPE, "", {})
    url = objects().presigned_get(image.bucket, image.key, DOWNLOAD_URL_SECONDS)
    return Response(302, glance.JSON, "", {"Location": url})


@router.route(f"{IMAGES_PATH}/<image_id>/file", method=["PUT"], include_in_schema=False)
@tracer.capture_method
def upload_image_data(image_id: str) -> Response[dict[str, Any]]:
    """Refused: data comes through S3 or a web-download import. `glance image-create --file` (and
    openstacksdk's create_image without import) first makes the image, then sends its data here;
    nothing in the create says data will follow, so the queued image made for this upload is
    deleted now instead of being left behind empty (see docs/decisions.md)."""
    caller = glance.current_caller(router)
    how = (
        f"Upload the file to s3://{settings().uploads_bucket}/uploads/<project_id>/<file name> (an "
        "import task is created for it), or create the image and import it from a URL: "
        "POST /v2/images/{image_id}/import with the web-download method."
    )
    refusal = "Image data cannot be uploaded through this API (API Gateway limits a request to 10 MB)."
    if _drop_unfilled(image_id, caller):
        refusal += f" The queued image {image_id} made for this upload was deleted."
    raise glance.HttpError(405, f"{refusal} {how}", {"Allow": "GET"})


def _drop_unfilled(image_id: str, caller: Caller) -> bool:
    """Delete the image if it is the caller's project's, queued, never imported into and not
    protected, and unchanged while this runs; whether it was deleted."""
    image = images_table().get(image_id)
    if (
        image is None
        or image.owner != caller.project_id  # an admin's refused upload deletes no other project's image
        or image.status is not ImageStatus.QUEUED
        or image.task_ids
        or image.protected
    ):
        return False
    if not images_table().delete_if_unchanged(image):
        return False
    logger.info("Queued image deleted after a refused upload", extra={"image_id": image_id})
    return True


@router.route(f"{IMAGES_PATH}/<image_id>/stage", method=["PUT"], include_in_schema=False)
def stage_image_data(image_id: str) -> Response[dict[str, Any]]:
    return upload_image_data(image_id)
