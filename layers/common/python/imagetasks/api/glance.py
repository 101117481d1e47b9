"""Glance's HTTP conventions on top of Powertools' REST resolver.

Every error leaves as `{"error": {"code", "title", "message"}}` (python-glanceclient crashes on a
flat body), every response carries `x-openstack-request-id`, and domain errors become HTTP
statuses here and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlencode

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import ValidationError

from imagetasks import __version__
from imagetasks.auth.identity import Caller
from imagetasks.domain.errors import (
    DomainError,
    IdempotencyKeyReused,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    NotPermitted,
    RequestInProgress,
    ReservedProperty,
    TooManyLongPolls,
)
from imagetasks.observability import logger

JSON = "application/json"
# A task is one DynamoDB item (400 KB at most) holding its input as JSON text: 256 KiB of request
# leaves room for the rest of the item and for the image record that copies the properties.
MAX_BODY_BYTES = 256 * 1024
# No task input needs more than a few levels; deeper documents only cost recursion.
MAX_JSON_DEPTH = 32
# What Glance 2.17 lists with its cache and multiple stores enabled (glance/api/versions.py): every
# minor version from 2.17 down to 2.0. python-glanceclient refuses `image-tasks` without v2.12.
API_VERSIONS = tuple(f"2.{minor}" for minor in range(17, -1, -1))

#: What a long poll refused for its project's limit is told to wait before trying again.
LONG_POLL_RETRY_AFTER_SECONDS = 2

#: Where a route reads its request: the API's resolver, or one of its routers.
Routes = APIGatewayRestResolver | APIGatewayRouter


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


def request_id(app: Routes) -> str:
    return f"req-{app.current_event.request_context.request_id}"


#: What a page on another origin may read of an answer besides the body (CORS hides other headers).
CORS_EXPOSED_HEADERS = "Location, Retry-After, x-openstack-request-id, OpenStack-image-import-methods"


def resolve(
    app: APIGatewayRestResolver, event: dict[str, Any], context: Any, cors_origin: str = ""
) -> dict[str, Any]:
    """Powertools' resolve, plus the request id header on every response (errors included) and,
    when the deployment names one, the origin browsers may read it from (`cors_origin`)."""
    result = app.resolve(event, context)
    request_id = f"req-{(event.get('requestContext') or {}).get('requestId', '')}"
    added = {"x-openstack-request-id": request_id}
    if cors_origin:
        added["Access-Control-Allow-Origin"] = cors_origin
        added["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
    result.setdefault("headers", {})
    for name, value in added.items():
        if result.get("multiValueHeaders") is not None:
            result["multiValueHeaders"].setdefault(name, [value])
        else:
            result["headers"].setdefault(name, value)
    return result


def current_caller(app: Routes) -> Caller:
    try:
        return Caller.from_authorizer_context(dict(app.current_event.request_context.authorizer or {}))
    except ValidationError:
        raise HttpError(401, "The request you have made requires authentication.") from None


#: Domain names of a local API Gateway (this project's local stack): served over plain HTTP.
_LOCAL_DOMAINS = ("localhost", "127.0.0.1", "[::1]")
_DOMAIN_NAME = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_STAGE_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)?")


def base_url(app: Routes, configured: str = "") -> str:
    """The API's absolute base URL (stage prefix included): the deployment's `configured` one, else
    API Gateway's own domain name and stage prefix from the request context. Never a request
    header: Host and X-Forwarded-* are the client's to write, and links must not be."""
    if configured:
        return configured.rstrip("/")
    event = app.current_event
    context = event.request_context
    domain = str(context.domain_name or "")
    if not _DOMAIN_NAME.fullmatch(domain):
        domain = "localhost"
    full_path = context.path or event.path
    prefix = full_path[: len(full_path) - len(event.path)] if full_path.endswith(event.path) else ""
    if not _STAGE_PREFIX.fullmatch(prefix):
        prefix = ""
    scheme = "http" if domain.rsplit(":", 1)[0] in _LOCAL_DOMAINS else "https"
    return f"{scheme}://{domain}{prefix}"


def path_parameter(decoded: Mapping[str, str] | None, name: str, matched: str) -> str:
    """A path parameter decoded once: as API Gateway gives it in `pathParameters`, else the value
    the route matched in the (percent-encoded) path, decoded here."""
    if decoded and isinstance(decoded.get(name), str):
        return decoded[name]
    return unquote(matched)


def page_links(
    path: str, params: Mapping[str, str] | Sequence[tuple[str, str]], next_marker: str | None
) -> dict[str, str]:
    """A list's `first` and `next` links as Glance writes them: the request's own query parameters
    again (never the service's defaults), without its marker; `next` adds the new marker last.
    `params` as a mapping, or as (name, value) pairs when a name may repeat."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    echoed = [(name, value) for name, value in pairs if name != "marker"]
    links = {"first": f"{path}?{urlencode(echoed)}" if echoed else path}
    if next_marker is not None:
        links["next"] = f"{path}?{urlencode([*echoed, ('marker', next_marker)])}"
    return links


def versions_document(app: APIGatewayRestResolver, configured_base_url: str = "") -> dict[str, Any]:
    href = f"{base_url(app, configured_base_url)}/v2/"
    return {
        # Beside Glance's list, which clients read: the service's own release (CHANGELOG.md).
        "service": {"name": "imagetasks", "version": __version__},
        "versions": [
            {
                "id": f"v{version}",
                "status": "CURRENT" if index == 0 else "SUPPORTED",
                "links": [{"rel": "self", "href": href}],
            }
            for index, version in enumerate(API_VERSIONS)
        ],
    }


def json_body(app: Routes) -> dict[str, Any]:
    """The request's JSON object (see `json_document` for the checks)."""
    body = json_document(app)
    if not isinstance(body, dict):
        raise InvalidRequest("Unexpected body type. Expected list/dict.")
    return body


def json_document(app: Routes) -> Any:
    """The request's JSON document, with Glance's messages for each way it can be wrong, and a clear
    400 or 413 for what Python's JSON module would accept but the service cannot keep: bodies that
    are not UTF-8, NaN and Infinity, nesting deeper than MAX_JSON_DEPTH, more than MAX_BODY_BYTES."""
    raw = _body_text(app.current_event.raw_event)
    if raw is None or raw.strip() == "":
        raise InvalidRequest("Body expected in request.")
    try:
        body = json.loads(
            raw, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except _Unrepresentable as refused:
        raise InvalidRequest(str(refused)) from None
    except RecursionError:
        raise InvalidRequest(_too_deep()) from None
    except ValueError:
        raise InvalidRequest("Malformed JSON in request body." + _sent_as(app)) from None
    if _depth_over(body, MAX_JSON_DEPTH):
        raise InvalidRequest(_too_deep())
    return body


def _sent_as(app: Routes) -> str:
    """What to add to "Malformed JSON" when the request said its body was something else (`curl -d`
    says application/x-www-form-urlencoded). The type itself is not refused: Glance reads a JSON body
    whatever its Content-Type says, and so do we (docs/decisions.md, "Request bodies")."""
    headers = {name.lower(): value for name, value in (app.current_event.headers or {}).items()}
    declared = str(headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if not declared or declared == JSON or declared.endswith("+json"):
        return ""
    shown = declared if len(declared) <= 80 and declared.isprintable() else "another type"
    return f" The body was sent as {shown}: send a JSON object, with Content-Type: {JSON}."


MAX_INTEGER_DIGITS = 100


class _Unrepresentable(ValueError):
    """A number Python would read but JSON (or any client) cannot carry back."""


def _refuse_constant(name: str) -> Any:
    raise _Unrepresentable(f"The request body holds {name}, which is not valid JSON; send a finite number.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unrepresentable(
            f"The request body holds the number {text[:40]}, which is too large; send a finite number."
        )
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _Unrepresentable(
            f"The request body holds an integer of {len(text.lstrip('-'))} digits; "
            f"at most {MAX_INTEGER_DIGITS} are accepted."
        )
    return int(text)


def _too_deep() -> str:
    return f"The request body nests JSON objects or arrays deeper than {MAX_JSON_DEPTH} levels."


def _body_text(event: dict[str, Any]) -> str | None:
    """The body as text, refusing what is too large or not UTF-8 (413 / 400)."""
    body = event.get("body")
    if body is None:
        return None
    if not isinstance(body, str):
        raise InvalidRequest("The request body is not text.")
    data: bytes
    if event.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("The request body is not valid base64.") from None
    else:
        # A string the Lambda event carried can hold lone surrogates: count them, do not choke on them.
        data = body.encode("utf-8", "surrogatepass")
    if len(data) > MAX_BODY_BYTES:
        raise HttpError(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        return data.decode("utf-8") if event.get("isBase64Encoded") else body
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not UTF-8 text; send JSON encoded as UTF-8.") from None


def _depth_over(value: Any, limit: int) -> bool:
    """Whether `value` nests containers more than `limit` deep (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def install_error_handlers(app: APIGatewayRestResolver) -> None:
    @app.exception_handler(HttpError)  # type: ignore[untyped-decorator]
    def _http_error(error: HttpError) -> Response[Any]:
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(InvalidRequest)  # type: ignore[untyped-decorator]
    def _invalid(error: InvalidRequest) -> Response[Any]:
        if isinstance(error, ReservedProperty):
            return error_response(403, error.message)
        if isinstance(error, LimitExceeded):
            return error_response(413, error.message)
        return error_response(400, error.message)

    @app.exception_handler(NotPermitted)  # type: ignore[untyped-decorator]
    def _not_permitted(error: NotPermitted) -> Response[Any]:
        return error_response(403, error.message)

    @app.exception_handler(NotFound)  # type: ignore[untyped-decorator]
    def _not_found(error: NotFound) -> Response[Any]:
        return error_response(404, error.message)

    @app.exception_handler(IdempotencyKeyReused)  # type: ignore[untyped-decorator]
    def _key_reused(error: IdempotencyKeyReused) -> Response[Any]:
        return error_response(422, error.message)

    @app.exception_handler(TooManyLongPolls)  # type: ignore[untyped-decorator]
    def _too_many_polls(error: TooManyLongPolls) -> Response[Any]:
        return error_response(429, error.message, {"Retry-After": str(LONG_POLL_RETRY_AFTER_SECONDS)})

    @app.exception_handler(RequestInProgress)  # type: ignore[untyped-decorator]
    def _in_progress(error: RequestInProgress) -> Response[Any]:
        return error_response(409, error.message, {"Retry-After": "1"})

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
