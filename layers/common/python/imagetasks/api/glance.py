"""Glance's HTTP conventions on top of Powertools' REST resolver.

Every error leaves as `{"error": {"code", "title", "message"}}` (python-glanceclient crashes on a
flat body), every response carries `x-openstack-request-id`, and domain errors become HTTP
statuses here and nowhere else.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from pydantic import ValidationError

from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import DomainError, InvalidRequest, NotFound
from imagetasks.observability import logger

JSON = "application/json"
MAX_BODY_BYTES = 1024 * 1024
API_VERSIONS = ("2.17", "2.16", "2.15", "2.9", "2.7", "2.6", "2.5", "2.4", "2.3", "2.2", "2.1", "2.0")


class HttpError(Exception):
    """An error that already knows its HTTP status (405, 413, 401...)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(status_code=status, content_type=JSON, body=json.dumps(body), headers=headers or {})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    title = HTTPStatus(status).phrase
    return json_response(status, {"error": {"code": status, "title": title, "message": message}}, headers)


def method_not_allowed(allowed: str, message: str | None = None) -> HttpError:
    return HttpError(405, message or "The method is not allowed for the requested URL.", {"Allow": allowed})


def request_id(app: APIGatewayRestResolver) -> str:
    return f"req-{app.current_event.request_context.request_id}"


def resolve(app: APIGatewayRestResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Powertools' resolve, plus the request id header on every response (errors included)."""
    result = app.resolve(event, context)
    request_id = f"req-{(event.get('requestContext') or {}).get('requestId', '')}"
    result.setdefault("headers", {})
    if result.get("multiValueHeaders") is not None:
        result["multiValueHeaders"].setdefault("x-openstack-request-id", [request_id])
    else:
        result["headers"].setdefault("x-openstack-request-id", request_id)
    return result


def current_caller(app: APIGatewayRestResolver) -> Caller:
    try:
        return Caller.from_authorizer_context(dict(app.current_event.request_context.authorizer or {}))
    except ValidationError:
        raise HttpError(401, "The request you have made requires authentication.") from None


def base_url(app: APIGatewayRestResolver) -> str:
    """The absolute URL the client used to reach the API, stage prefix included."""
    event = app.current_event
    headers = {k.lower(): v for k, v in (event.headers or {}).items()}
    scheme = headers.get("x-forwarded-proto", "https")
    host = headers.get("host", "localhost")
    full_path = event.request_context.path or event.path
    prefix = full_path[: len(full_path) - len(event.path)] if full_path.endswith(event.path) else ""
    return f"{scheme}://{host}{prefix}"


def versions_document(app: APIGatewayRestResolver) -> dict[str, Any]:
    href = f"{base_url(app)}/v2/"
    return {
        "versions": [
            {
                "id": f"v{version}",
                "status": "CURRENT" if index == 0 else "SUPPORTED",
                "links": [{"rel": "self", "href": href}],
            }
            for index, version in enumerate(API_VERSIONS)
        ]
    }


def json_body(app: APIGatewayRestResolver) -> dict[str, Any]:
    """The request's JSON object, with Glance's messages for each way it can be wrong."""
    raw = app.current_event.decoded_body
    if raw is not None and len(raw.encode()) > MAX_BODY_BYTES:
        raise HttpError(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    if raw is None or raw.strip() == "":
        raise InvalidRequest("Body expected in request.")
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidRequest("Malformed JSON in request body.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Unexpected body type. Expected list/dict.")
    return body


def install_error_handlers(app: APIGatewayRestResolver) -> None:
    @app.exception_handler(HttpError)  # type: ignore[untyped-decorator]
    def _http_error(error: HttpError) -> Response[Any]:
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(InvalidRequest)  # type: ignore[untyped-decorator]
    def _invalid(error: InvalidRequest) -> Response[Any]:
        return error_response(400, error.message)

    @app.exception_handler(NotFound)  # type: ignore[untyped-decorator]
    def _not_found(error: NotFound) -> Response[Any]:
        return error_response(404, error.message)

    @app.exception_handler(DomainError)  # type: ignore[untyped-decorator]
    def _domain(error: DomainError) -> Response[Any]:
        logger.warning("Request refused by the domain", extra={"error": type(error).__name__})
        return error_response(409, error.message)

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def _unexpected(error: Exception) -> Response[Any]:
        logger.exception("Unexpected error while handling the request")
        return error_response(500, "The service could not complete the request; please try again.")

    @app.not_found
    def _no_route(error: Exception) -> Response[Any]:
        return error_response(404, "The resource could not be found.")
