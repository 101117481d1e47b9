"""The local API Gateway: HTTP request → REST proxy event → authorizer → handler → HTTP response.

moto's own API Gateway does not run Lambda proxy integrations, so this small front does what API
Gateway does for our template: it matches the request against the API events of the template's
functions, calls the REQUEST authorizer first (no identity header → 401 without calling it,
`Unauthorized` → 401, Deny → 403, Allow → its context in `requestContext.authorizer`), calls the
function with the same event shape as the files in `events/`, and writes the result back. API
Gateway's own errors use the template's GatewayResponse bodies, so clients see what the deployed API
sends. Paths are served at the root, not under /<Stage>, so `--os-image-url http://127.0.0.1:3000` works.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local import iam_policy
from local.lambda_runtime import AUTHORIZER_UNAUTHORIZED, FunctionDirectory
from local.template import ACCOUNT_ID, REGION, GatewayResponse, LocalTemplate, Route, _as_str, rest_api_id

log = logging.getLogger("local.front")

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
REQUEST_ID_HEADER = "x-openstack-request-id"


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    pattern: re.Pattern[str]
    parameter_names: tuple[str, ...]
    #: The matching order: more literal segments first, then greedy (`{name+}`) last, fewer parameters first.
    rank: tuple[int, bool, int]


def _compile(route: Route) -> _CompiledRoute:
    names: list[str] = []
    parts: list[str] = []
    literal = 0
    greedy = False
    for segment in route.path.strip("/").split("/") if route.path.strip("/") else []:
        match = re.fullmatch(r"\{([^}+]+)(\+?)\}", segment)
        if match:
            names.append(match.group(1))
            greedy = greedy or bool(match.group(2))
            parts.append("(.+)" if match.group(2) else "([^/]+)")
        else:
            literal += 1
            parts.append(re.escape(segment))
    suffix = "/" if route.path.endswith("/") and route.path != "/" else ""
    pattern = re.compile("/" + "/".join(parts) + suffix)
    return _CompiledRoute(route, pattern, tuple(names), (-literal, greedy, len(names)))


def route_for(routes: Iterable[Route], path: str, method: str) -> Route | None:
    """The route of the path template `path` for `method`, else its ANY route."""
    same_path = [route for route in routes if route.path == path]
    return next((r for r in same_path if r.method == method), None) or next(
        (r for r in same_path if r.method == "ANY"), None
    )


class ApiFront:
    """Turns HTTP requests into calls of the template's API functions (transport-free: see `FrontServer`)."""

    def __init__(self, template: LocalTemplate, runner: FunctionDirectory) -> None:
        self._template = template
        self._runner = runner
        self._routes = sorted((_compile(route) for route in template.routes), key=lambda c: c.rank)
        # API Gateway's own name for itself (requestContext.domainName); FrontServer sets it to the
        # address it listens on, which is what links back to this server need.
        self.domain_name = "localhost"
        api_ids = {route.api_logical_id for route in template.routes}
        self.api_id = rest_api_id(next(iter(api_ids))) if api_ids else "local"
        self.stage = template.stage
        # API Gateway's authorizer cache: (authorizer, identity values) → (expiry, the answer).
        self._authorizer_answers: dict[tuple[str, ...], tuple[float, dict[str, Any]]] = {}

    # ---------------------------------------------------------------- routing
    def _match(self, path: str) -> tuple[str, dict[str, str]]:
        """The path template of the first route (in matching order) that `path` matches, and its path
        parameters; ("", {}) when none does."""
        for compiled in self._routes:
            match = compiled.pattern.fullmatch(path)
            if match:
                values = match.groups()
                return compiled.route.path, {
                    name: unquote(value) for name, value in zip(compiled.parameter_names, values, strict=True)
                }
        return "", {}

    # ---------------------------------------------------------------- one request
    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
    ) -> HttpResponse:
        request_id = str(uuid.uuid4())
        split = urlsplit(target)
        # As API Gateway (REST) passes it: `path` as the client sent it (percent-encoded), each
        # path parameter decoded once (`pathParameters`).
        path = split.path or "/"
        resource, path_parameters = self._match(path)
        preflight = self._template.preflights.get(resource)
        if method == "OPTIONS" and preflight is not None:
            # The CORS preflight, answered as API Gateway's mock integration does (no authorizer).
            answer = [("Content-Type", "application/json")]
            answer += [(name, _header_value(source, request_id)) for name, source in preflight.items()]
            return _with_request_id(HttpResponse(200, answer, b"{}"), request_id)
        route = route_for(self._template.routes, resource, method)
        if route is None:
            # API Gateway (REST) answers a path it has no resource for, and a method a resource
            # lacks, with its MISSING_AUTHENTICATION_TOKEN response: a 403, whatever the token.
            return self._gateway_error(
                "MISSING_AUTHENTICATION_TOKEN", 403, "Missing Authentication Token", request_id
            )
        if len(body) > MAX_BODY_BYTES:
            return self._gateway_error("REQUEST_TOO_LARGE", 413, "Request Too Long", request_id)

        # API Gateway adds the X-Forwarded-* headers the client did not send.
        sent = {name.lower() for name, _ in headers}
        forwarded = [("X-Forwarded-For", source_ip), ("X-Forwarded-Proto", "http")]
        single_headers, multi_headers = _last_and_all(
            headers + [(name, value) for name, value in forwarded if name.lower() not in sent]
        )
        single_query, multi_query = _last_and_all(parse_qsl(split.query, keep_blank_values=True))
        text_body: str | None
        try:
            text_body, is_base64 = (body.decode("utf-8"), False) if body else (None, False)
        except UnicodeDecodeError:
            text_body, is_base64 = base64.b64encode(body).decode("ascii"), True
        now = time.time()
        user_agent = next((value for name, value in headers if name.lower() == "user-agent"), None)
        event: dict[str, Any] = {
            "resource": route.path,
            "path": path,
            "httpMethod": method,
            "headers": single_headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": single_query or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "local",
                "resourcePath": route.path,
                "httpMethod": method,
                "extendedRequestId": request_id,
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                # The full path the client used: locally the stage is not part of it (paths are
                # served at the root), so links the handlers build point back at this server.
                "path": path,
                "accountId": ACCOUNT_ID,
                "protocol": "HTTP/1.1",
                "stage": self.stage,
                "domainPrefix": "localhost",
                "requestTimeEpoch": int(now * 1000),
                "requestId": request_id,
                "identity": {"sourceIp": source_ip, "userAgent": user_agent},
                "domainName": self.domain_name,
                "apiId": self.api_id,
            },
            "body": text_body,
            "isBase64Encoded": is_base64,
        }
        if route.authorizer_logical_id is not None:
            denied = self._authorize(route, route.authorizer_logical_id, event, request_id)
            if denied is not None:
                return denied
        return self._integrate(route, event, request_id)

    def _authorize(
        self, route: Route, authorizer_id: str, event: dict[str, Any], request_id: str
    ) -> HttpResponse | None:
        """None to go on (and `event` now carries the authorizer's context), else the error response."""
        headers = {name.lower(): value for name, value in (event["headers"] or {}).items()}
        if any(not headers.get(name.lower(), "").strip() for name in route.identity_headers):
            # API Gateway answers without calling the authorizer when an identity source is missing.
            return self._gateway_error("UNAUTHORIZED", 401, AUTHORIZER_UNAUTHORIZED, request_id)
        stage_arn = f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{self.api_id}/{self.stage}"
        method_arn = f"{stage_arn}/{event['httpMethod']}{event['path']}"
        identity: tuple[str, ...] | None = None  # the cache's key, when the answer is cached
        if route.authorizer_cache_seconds > 0 and route.identity_headers:
            # Every value of each identity header (two tokens are not the first one's).
            multi = {name.lower(): values for name, values in (event["multiValueHeaders"] or {}).items()}
            identity = (authorizer_id, *("\n".join(multi[name.lower()]) for name in route.identity_headers))
        cached = self._authorizer_answers.get(identity) if identity else None
        if cached is not None and cached[0] > time.monotonic():
            result = cached[1]
        else:
            same = ("resource", "path", "httpMethod", "headers", "multiValueHeaders")
            authorizer_event = {
                "type": "REQUEST",
                "methodArn": method_arn,
                **{name: event[name] for name in same},
                "queryStringParameters": event["queryStringParameters"] or {},
                "multiValueQueryStringParameters": event["multiValueQueryStringParameters"] or {},
                "pathParameters": event["pathParameters"] or {},
                "stageVariables": {},
                "requestContext": event["requestContext"],
            }
            invocation = self._runner.invoke(self._runner.functions[authorizer_id], authorizer_event)
            result = _json_or_none(invocation.payload)
            if invocation.errored:
                message = result.get("errorMessage") if isinstance(result, dict) else None
                if message == AUTHORIZER_UNAUTHORIZED:
                    return self._gateway_error("UNAUTHORIZED", 401, AUTHORIZER_UNAUTHORIZED, request_id)
                return self._gateway_error("AUTHORIZER_FAILURE", 500, "Internal server error", request_id)
            if not isinstance(result, dict) or not isinstance(result.get("policyDocument"), dict):
                log.error("%s returned no policy document", authorizer_id)
                return self._gateway_error(
                    "AUTHORIZER_CONFIGURATION_ERROR", 500, "Internal server error", request_id
                )
            if identity:
                # As API Gateway: the answer stands for this identity until it expires, and its
                # policy is evaluated against each later request's own method ARN (an answer that
                # allows only the first route denies the others).
                if len(self._authorizer_answers) > 10_000:
                    self._authorizer_answers.clear()
                self._authorizer_answers[identity] = (
                    time.monotonic() + route.authorizer_cache_seconds,
                    result,
                )
        # IAM's evaluation of the authorizer's policy for execute-api:Invoke on the method's ARN.
        decision = iam_policy.evaluate([result["policyDocument"]], "execute-api:Invoke", method_arn)
        if decision is not iam_policy.Decision.ALLOW:
            return self._gateway_error(
                "ACCESS_DENIED", 403, "User is not authorized to access this resource", request_id
            )
        context = result.get("context") or {}
        if not isinstance(context, dict) or any(isinstance(v, dict | list) for v in context.values()):
            log.error("%s returned a context that is not a flat map", authorizer_id)
            return self._gateway_error(
                "AUTHORIZER_CONFIGURATION_ERROR", 500, "Internal server error", request_id
            )
        # The proxy event carries context values as strings, whatever type the authorizer gave.
        authorizer_context: dict[str, Any] = {key: _as_str(value) for key, value in context.items()}
        authorizer_context["principalId"] = str(result.get("principalId", ""))
        authorizer_context["integrationLatency"] = 0
        event["requestContext"]["authorizer"] = authorizer_context
        return None

    def _integrate(self, route: Route, event: dict[str, Any], request_id: str) -> HttpResponse:
        invocation = self._runner.invoke(self._runner.functions[route.function_logical_id], event)
        result = _json_or_none(invocation.payload)
        proxied = isinstance(result, dict) and isinstance(result.get("statusCode"), int)
        if not (proxied or invocation.errored):
            log.error(
                "%s returned no API Gateway proxy response (statusCode missing)", route.function_logical_id
            )
        if invocation.errored or not proxied:
            # API Gateway's answer to a failed or malformed Lambda proxy integration.
            return self._gateway_error("DEFAULT_5XX", 502, "Internal server error", request_id)
        body = "" if result.get("body") is None else str(result["body"])
        if result.get("isBase64Encoded"):
            try:
                content = base64.b64decode(body)
            except ValueError:  # binascii.Error too
                return self._gateway_error("DEFAULT_5XX", 502, "Internal server error", request_id)
        else:
            content = body.encode("utf-8")
        headers: list[tuple[str, str]] = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers.extend((str(name), str(value)) for value in values or [])
        response = HttpResponse(status=result["statusCode"], headers=headers, body=content)
        if response.header("content-type") is None:
            response.headers.append(("Content-Type", "application/json"))  # API Gateway's default
        return _with_request_id(response, request_id)

    # ---------------------------------------------------------------- errors
    def _gateway_error(self, response_type: str, status: int, message: str, request_id: str) -> HttpResponse:
        """API Gateway's own error, shaped by the template's GatewayResponse of that type (or DEFAULT_*)."""
        responses: Mapping[str, GatewayResponse] = self._template.gateway_responses
        default_type = "DEFAULT_4XX" if status < 500 else "DEFAULT_5XX"
        configured = responses.get(response_type) or responses.get(default_type)
        headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
        if configured is None or configured.template is None:
            body = json.dumps({"message": message})
        else:
            body = _render(configured.template, message, request_id, response_type)
            for name, source in configured.headers.items():
                headers.append((name, _header_value(source, request_id)))
        # The status API Gateway sends: the type's own GatewayResponse's if it sets one, else the
        # DEFAULT_* one's if that sets one (it then applies to every type it covers), else its own.
        if configured is not None and configured.status is not None:
            status = configured.status
        headers.append(("x-amzn-ErrorType", _ERROR_TYPES.get(response_type, "")))
        return _with_request_id(HttpResponse(status, headers, body.encode("utf-8")), request_id)


def _with_request_id(response: HttpResponse, request_id: str) -> HttpResponse:
    if response.header(REQUEST_ID_HEADER) is None:
        response.headers.append((REQUEST_ID_HEADER, f"req-{request_id}"))
    return response


_ERROR_TYPES = {
    "UNAUTHORIZED": "UnauthorizedException",
    "ACCESS_DENIED": "AccessDeniedException",
    "AUTHORIZER_FAILURE": "AuthorizerConfigurationException",
    "AUTHORIZER_CONFIGURATION_ERROR": "AuthorizerConfigurationException",
    "DEFAULT_5XX": "InternalServerErrorException",
    "REQUEST_TOO_LARGE": "RequestTooLargeException",
    "MISSING_AUTHENTICATION_TOKEN": "MissingAuthenticationTokenException",
}


def _render(template: str, message: str, request_id: str, response_type: str) -> str:
    # Only the $context variables a GatewayResponse template can use for these errors.
    values = {
        "$context.error.messageString": json.dumps(message),  # API Gateway's quoted form
        "$context.error.message": message,
        "$context.error.responseType": response_type,
        "$context.requestId": request_id,
    }
    pattern = re.compile("|".join(re.escape(key) for key in sorted(values, key=len, reverse=True)))
    return pattern.sub(lambda match: values[match.group(0)], template)


def _header_value(source: str, request_id: str) -> str:
    if source.startswith("'") and source.endswith("'"):
        return source[1:-1]
    return request_id if source == "context.requestId" else ""


def _last_and_all(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """A proxy event's two maps of repeated names: API Gateway keeps the last value, and every value."""
    last: dict[str, str] = {}
    every: dict[str, list[str]] = {}
    for name, value in pairs:
        last[name] = value
        every.setdefault(name, []).append(value)
    return last, every


def _json_or_none(payload: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


# ------------------------------------------------------------------ the HTTP server


def _content_length(values: list[str]) -> int | None:
    """The body's length from the Content-Length headers: 0 without one; None when it is not one
    non-negative decimal number (repeated headers must agree)."""
    lengths = {value.strip() for value in values}
    if not lengths:
        return 0
    text = lengths.pop() if len(lengths) == 1 else ""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients such as requests reuse connections
    # The head and the body go out as two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK of the head, 40 ms on Linux, on every answer of a kept-alive connection.
    disable_nagle_algorithm = True
    front: ApiFront  # set on the subclass FrontServer makes

    def _serve(self) -> None:
        length = _content_length(self.headers.get_all("Content-Length") or [])
        if length is None:
            # Malformed HTTP, as API Gateway's edge answers it; the body cannot be delimited, so
            # the connection ends here.
            self.close_connection = True
            message = b'{"message": "Bad request: Content-Length must be one non-negative number"}'
            self._answer(HttpResponse(400, [("Content-Type", "application/json")], message))
            return
        body = self.rfile.read(length) if length else b""
        try:
            response = self.front.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
        except Exception:
            log.exception("the local front failed on %s %s", self.command, self.path)
            response = HttpResponse(
                500, [("Content-Type", "application/json")], b'{"message": "Internal server error"}'
            )
        self._answer(response)

    def _answer(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method without a `do_<METHOD>` with its own 501 HTML page; every
        # method goes to the front instead, which answers like any method the path does not have.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of new connections (32 clients starting at once)
    # overflowed it and clients saw resets. API Gateway takes such bursts; so does the front now.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away before its answer (a timeout, Ctrl-C) is not the front's error:
        # one line, not socketserver's traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.info("%s went away before its answer", client_address[0])
            return
        super().handle_error(request, client_address)


class FrontServer:
    """The front on a ThreadingHTTPServer; `port=0` picks a free port (see `.port`)."""

    server_class = _Server

    def __init__(self, front: ApiFront, host: str = "127.0.0.1", port: int = 3000) -> None:
        handler = type("RequestHandler", (_RequestHandler,), {"front": front})
        self._server = self.server_class((host, port), handler)
        self._server.daemon_threads = True
        front.domain_name = self.url.removeprefix("http://")
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-api-front", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
