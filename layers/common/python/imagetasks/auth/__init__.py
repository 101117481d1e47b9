"""Who is calling: token verification for the API Gateway authorizer, and the caller identity the API trusts.

Submodules for one token kind (`oidc`, `keystone`, `local`) are imported only when that kind is configured.
"""

from imagetasks.auth.authorizer import MAX_TOKEN_BYTES, AccessDecision, RequestAuthorizer, build_authorizer
from imagetasks.auth.errors import (
    AuthConfigurationError,
    AuthError,
    IdentityProviderUnavailableError,
    InvalidTokenError,
)
from imagetasks.auth.identity import ADMIN_ROLE, Caller, Identity
from imagetasks.auth.settings import ApiAccess, AuthMode, AuthSettings
from imagetasks.auth.verifier import TokenVerifier

__all__ = [
    "ADMIN_ROLE",
    "MAX_TOKEN_BYTES",
    "AccessDecision",
    "ApiAccess",
    "AuthConfigurationError",
    "AuthError",
    "AuthMode",
    "AuthSettings",
    "Caller",
    "Identity",
    "IdentityProviderUnavailableError",
    "InvalidTokenError",
    "RequestAuthorizer",
    "TokenVerifier",
    "build_authorizer",
]
