"""Why a request is not authenticated. Each becomes `Unauthorized` (401) at the authorizer."""


class AuthError(Exception):
    """Base class. Messages are for logs and never contain the token."""


class InvalidTokenError(AuthError):
    """The token is missing, malformed, oversized, forged, expired or otherwise not acceptable."""


class IdentityProviderUnavailableError(AuthError):
    """The identity provider (JWKS endpoint, Keystone) could not be asked; we fail closed."""


class AuthConfigurationError(AuthError):
    """The deployment's auth settings are unusable (e.g. local mode without a strong key); fail closed."""
