"""Deciding on a request: verify the token, then apply the deployment's access rule."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from imagetasks.auth.errors import InvalidTokenError
from imagetasks.auth.identity import ADMIN_ROLE, Caller
from imagetasks.auth.settings import ApiAccess, AuthSettings
from imagetasks.auth.verifier import TokenVerifier

# Larger tokens are refused before any parsing. Real ones are far smaller (a Fernet token is ~200 bytes,
# a Cognito ID token ~1-2 KiB); an 8 KiB header is already at API Gateway's own limits.
MAX_TOKEN_BYTES = 8 * 1024


@dataclass(frozen=True)
class AccessDecision:
    caller: Caller
    allowed: bool


class RequestAuthorizer:
    def __init__(self, verifier: TokenVerifier, access: ApiAccess = "member") -> None:
        self._verifier = verifier
        self._access = access

    def decide(self, token: str | None) -> AccessDecision:
        """Raise InvalidTokenError (→ 401) or return who the caller is and whether they may proceed."""
        if token is None or not token.strip():
            raise InvalidTokenError("no token")
        token = token.strip()
        if len(token.encode("utf-8", errors="replace")) > MAX_TOKEN_BYTES:
            raise InvalidTokenError("token is oversized")
        caller = self._verifier.verify(token)
        return AccessDecision(caller=caller, allowed=self._access == "member" or caller.has_role(ADMIN_ROLE))


def build_verifier(settings: AuthSettings) -> TokenVerifier:
    """The verifier for the configured token kind (imports only what that kind needs)."""
    if settings.auth_mode == "oidc":
        from imagetasks.auth.oidc import OidcVerifier

        return OidcVerifier.from_settings(settings)
    if settings.auth_mode == "keystone":
        from imagetasks.auth.keystone import KeystoneVerifier, credentials_from_secret

        return KeystoneVerifier(
            v3_url=settings.keystone_v3_url,
            credentials=credentials_from_secret(settings.keystone_credentials_secret),
        )
    from imagetasks.auth.local import LocalTokenVerifier

    key: SecretStr = settings.local_token_key
    return LocalTokenVerifier(key.get_secret_value())


def build_authorizer(settings: AuthSettings) -> RequestAuthorizer:
    return RequestAuthorizer(build_verifier(settings), settings.tasks_api_access)
