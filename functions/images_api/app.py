"""The Glance v2 Images API: images made by tasks, and Glance's interoperable import (a queued image
created by POST /v2/images, filled by POST /v2/images/{id}/import with web-download).

The routes are in four routers: the images (image_routes), changes to one (tag_routes: the JSON
patch and tags), the import with what a client reads first (import_routes), and the image's members
(member_routes: sharing)."""

from typing import Any

import image_routes
import import_routes
import member_routes
import tag_routes
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from image_views import image_import, images_table, objects, tasks_table

from imagetasks.api import glance
from imagetasks.observability import logger, tracer

# The cached collaborators, named here too: tests build them again for each moto.
__all__ = ["app", "image_import", "images_table", "lambda_handler", "objects", "tasks_table"]

app = APIGatewayRestResolver()
glance.install_error_handlers(app)
app.include_router(image_routes.router)
app.include_router(tag_routes.router)
app.include_router(import_routes.router)
app.include_router(member_routes.router)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return glance.resolve(app, event, context)
