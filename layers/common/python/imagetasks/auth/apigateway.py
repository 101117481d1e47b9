"""The API Gateway side of a REST `REQUEST` authorizer: where the token is, and the policy we answer with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    parse_api_gateway_arn,
)

from imagetasks.auth.authorizer import AccessDecision
from imagetasks.auth.errors import InvalidTokenError

AUTH_TOKEN_HEADER = "x-auth-token"  # noqa: S105 - a header name, not a secret


def auth_token_from_event(event: Mapping[str, Any]) -> str | None:
    """The `X-Auth-Token` value, whatever its case, from `headers` or `multiValueHeaders`.

    No other header is read: `X-Project-Id`, `X-Roles`, `X-User-Id` and the like never say who the caller is.
    Two different values for the token are ambiguous, and refused.
    """
    values: set[str] = set()
    for name, value in (event.get("headers") or {}).items():
        if isinstance(name, str) and name.lower() == AUTH_TOKEN_HEADER and isinstance(value, str):
            values.add(value.strip())
    for name, multi in (event.get("multiValueHeaders") or {}).items():
        if isinstance(name, str) and name.lower() == AUTH_TOKEN_HEADER and isinstance(multi, list):
            values.update(value.strip() for value in multi if isinstance(value, str))
    values.discard("")
    if len(values) > 1:
        raise InvalidTokenError("more than one token in the request")
    return values.pop() if values else None


def policy_response(decision: AccessDecision, method_arn: str) -> dict[str, Any]:
    """An IAM policy on every method of the stage, so API Gateway's cached answer fits every route.

    Allowed callers get their identity in `context` (string values only); the API reads it from
    `requestContext.authorizer`.
    """
    try:
        arn = parse_api_gateway_arn(method_arn)
    except (IndexError, AttributeError, TypeError):
        raise InvalidTokenError("methodArn is not an API Gateway method ARN") from None
    if not (arn.region and arn.aws_account_id and arn.api_id and arn.stage):
        raise InvalidTokenError("methodArn is not an API Gateway method ARN")
    response = APIGatewayAuthorizerResponse(
        principal_id=decision.caller.user_id,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context=decision.caller.to_authorizer_context() if decision.allowed else None,
        partition=arn.partition,
    )
    if decision.allowed:
        response.allow_all_routes()
    else:
        response.deny_all_routes()
    return response.asdict()
