"""Local tokens: HS256 JWTs signed with a key the local stack generates per run.

The deployed template does not offer this mode, and it refuses to start without a strong key.
`local/tokens.py` mints these tokens; keep the two in step (a unit test checks they agree).
"""

from __future__ import annotations

from typing import Any

import jwt
from jwt.exceptions import PyJWTError

from imagetasks.auth.errors import AuthConfigurationError, InvalidTokenError
from imagetasks.auth.identity import Caller
from imagetasks.auth.settings import LOCAL_TOKEN_KEY_MIN_LENGTH

LOCAL_ISSUER = "imagetasks-local"
LOCAL_ALGORITHM = "HS256"
CLOCK_SKEW_SECONDS = 5


class LocalTokenVerifier:
    def __init__(self, key: str) -> None:
        if len(key) < LOCAL_TOKEN_KEY_MIN_LENGTH:
            raise AuthConfigurationError("local token key is too short")
        self._key = key

    def verify(self, token: str) -> Caller:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=self._key,
                algorithms=[LOCAL_ALGORITHM],
                issuer=LOCAL_ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False},
            )
        except PyJWTError as error:
            raise InvalidTokenError(f"token rejected: {type(error).__name__}") from None
        roles = claims.get("roles", [])
        if not isinstance(roles, list):
            raise InvalidTokenError("token roles claim is not a list")
        try:
            return Caller(project_id=claims.get("project_id"), user_id=claims.get("sub"), roles=roles)
        except ValueError:
            raise InvalidTokenError("token claims do not describe a caller") from None
