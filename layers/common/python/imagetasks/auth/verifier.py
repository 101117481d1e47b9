"""The port every token kind implements."""

from __future__ import annotations

from typing import Protocol

from imagetasks.auth.identity import Caller


class TokenVerifier(Protocol):
    """Turns a token into the caller it speaks for, or raises an AuthError."""

    def verify(self, token: str) -> Caller:
        """Raise InvalidTokenError if the token is not acceptable, IdentityProviderUnavailableError if
        the identity provider could not be asked."""
        ...
