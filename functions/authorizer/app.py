"""API Gateway REST `REQUEST` authorizer: `X-Auth-Token` → IAM policy + caller context.

- no, malformed, forged or expired token → `Unauthorized` (API Gateway answers 401)
- a valid token without the role this deployment requires → Deny policy (403)
- otherwise Allow on every method of the stage, with context project_id, user_id, roles
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagetasks.auth import (
    AuthConfigurationError,
    IdentityProviderUnavailableError,
    InvalidTokenError,
    RequestAuthorizer,
    build_authorizer,
)
from imagetasks.auth.apigateway import auth_token_from_event, policy_response
from imagetasks.auth.settings import AuthSettings

logger = Logger()


@lru_cache(maxsize=1)
def get_authorizer() -> RequestAuthorizer:
    """Built once per execution environment, so key and service-token caches outlive one invocation."""
    return build_authorizer(AuthSettings.from_env())


# log_event stays False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the event holds the token.
@logger.inject_lambda_context(log_event=False, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        decision = get_authorizer().decide(auth_token_from_event(event))
        response = policy_response(decision, event.get("methodArn", ""))
    except AuthConfigurationError as error:
        logger.error("authorizer misconfigured; refusing every request", extra={"reason": str(error)})
        raise Exception("Unauthorized") from None  # API Gateway turns exactly this into a 401
    except IdentityProviderUnavailableError as error:
        logger.error("identity provider unavailable; refusing the request", extra={"reason": str(error)})
        raise Exception("Unauthorized") from None
    except InvalidTokenError as error:
        logger.info("token refused", extra={"reason": str(error)})
        raise Exception("Unauthorized") from None
    if decision.allowed:
        logger.info(
            "allowed", extra={"project_id": decision.caller.project_id, "user_id": decision.caller.user_id}
        )
    else:
        logger.info("denied: role required", extra={"user_id": decision.caller.user_id})
    return response
