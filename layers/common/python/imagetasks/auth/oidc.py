"""OIDC/JWT tokens (e.g. a Cognito user pool): signature against the JWKS, issuer, audience, expiry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jwt
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError, PyJWTError

from imagetasks.auth.errors import IdentityProviderUnavailableError, InvalidTokenError
from imagetasks.auth.identity import Caller, split_roles
from imagetasks.auth.settings import AuthSettings

CLOCK_SKEW_SECONDS = 30
JWKS_CACHE_SECONDS = 600
JWKS_TIMEOUT_SECONDS = 3.0
# An unknown kid makes PyJWKClient refetch the JWKS at most once per this many seconds, so tokens
# with random key ids cannot turn the authorizer into a JWKS request amplifier.
JWKS_REFRESH_COOLDOWN_SECONDS = 30.0

_jwks_clients: dict[str, PyJWKClient] = {}


def jwks_client_for(url: str) -> PyJWKClient:
    """One PyJWKClient (and so one key cache) per JWKS URL for the life of the execution environment."""
    client = _jwks_clients.get(url)
    if client is None:
        client = PyJWKClient(
            url,
            cache_keys=True,
            cache_jwk_set=True,
            lifespan=JWKS_CACHE_SECONDS,
            timeout=JWKS_TIMEOUT_SECONDS,
            cooldown_duration=JWKS_REFRESH_COOLDOWN_SECONDS,
        )
        _jwks_clients[url] = client
    return client


class OidcVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_client: PyJWKClient,
        algorithms: Sequence[str] = ("RS256",),
        project_claim: str = "custom:project_id",
        roles_claim: str = "cognito:groups",
        user_claim: str = "sub",
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks = jwks_client
        self._algorithms = list(algorithms)
        self._project_claim = project_claim
        self._roles_claim = roles_claim
        self._user_claim = user_claim

    @classmethod
    def from_settings(cls, settings: AuthSettings, jwks_client: PyJWKClient | None = None) -> OidcVerifier:
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_client=jwks_client or jwks_client_for(settings.jwks_url),
            algorithms=settings.oidc_algorithms,
            project_claim=settings.oidc_project_claim,
            roles_claim=settings.oidc_roles_claim,
            user_claim=settings.oidc_user_claim,
        )

    def verify(self, token: str) -> Caller:
        claims = self._verified_claims(token)
        project_id = claims.get(self._project_claim)
        user_id = claims.get(self._user_claim)
        if not isinstance(project_id, str) or not project_id.strip():
            raise InvalidTokenError(f"token has no {self._project_claim} claim")
        if not isinstance(user_id, str) or not user_id.strip():
            raise InvalidTokenError(f"token has no {self._user_claim} claim")
        roles = claims.get(self._roles_claim)
        if not isinstance(roles, str | list):
            roles = None
        try:
            return Caller(project_id=project_id, user_id=user_id, roles=split_roles(roles))
        except ValueError:
            raise InvalidTokenError("token claims do not describe a caller") from None

    def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise InvalidTokenError("malformed token") from None
        # Checked before any key lookup, so `alg: none` or HS256 never reaches the JWKS client.
        if header.get("alg") not in self._algorithms:
            raise InvalidTokenError("token algorithm is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("token has no key id")
        try:
            signing_key = self._jwks.get_signing_key(kid)
        except PyJWKClientConnectionError:
            raise IdentityProviderUnavailableError("JWKS endpoint unreachable") from None
        except PyJWKClientError:
            raise InvalidTokenError("token key id is not in the JWKS") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=signing_key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except PyJWTError as error:
            # The exception's class names the reason (ExpiredSignatureError, InvalidAudienceError, ...);
            # its text is not logged, so nothing from the token can leak.
            raise InvalidTokenError(f"token rejected: {type(error).__name__}") from None
        return claims
