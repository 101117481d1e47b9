"""The Glance v2 Images API: images made by tasks, and Glance's interoperable import (a queued image
created by POST /v2/images, filled by POST /v2/images/{id}/import with web-download).

The routes are in five routers: the images (image_routes), their data (data_routes: the download
and the refused uploads), changes to one (tag_routes: the JSON patch and tags), the import with what
a client reads first (import_routes), and the image's members (member_routes: sharing)."""

from typing import Any

import data_routes
import image_routes
import import_routes
import member_routes
import tag_routes
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from image_views import image_import, images_table, objects, tasks_table

from imagetasks.api import glance
from imagetasks.config import settings
from imagetasks.observability import logger, tracer

# The cached collaborators, named here too: tests build them again for each moto.
__all__ = ["app", "image_import", "images_table", "lambda_handler", "objects", "tasks_table"]

app = APIGatewayRestResolver()
glance.install_error_handlers(app)
app.include_router(image_routes.router)
app.include_router(data_routes.router)
app.include_router(tag_routes.router)
app.include_router(import_routes.router)
app.include_router(member_routes.router)

# Glance's metadata definitions (`glance md-*`, openstacksdk's metadef calls): the template sends
# their paths here so that a client learns the API is not offered, instead of a bare "not found".
METADEFS_PREFIXES = ("/v2/metadefs", "/v2/schemas/metadefs")
METADEFS_NOT_OFFERED = (
    "The metadata definitions API (/v2/metadefs, the glance md-* commands) is not offered by this "
    "service: it serves images and image tasks only (GET /openapi.json lists its routes)."
)


@app.not_found
def no_route(error: Exception) -> Response[Any]:
    event = app.current_event
    if any(event.path == p or event.path.startswith(p + "/") for p in METADEFS_PREFIXES):
        return glance.error_response(404, METADEFS_NOT_OFFERED)
    return glance.error_response(404, "The resource could not be found.")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return glance.resolve(app, event, context, settings().cors_allow_origin)
