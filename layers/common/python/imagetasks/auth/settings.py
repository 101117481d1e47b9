"""The authorizer's configuration: one validated model, read from the environment once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from imagetasks.auth.errors import AuthConfigurationError

AuthMode = Literal["oidc", "keystone", "local"]
ApiAccess = Literal["member", "admin"]

# Asymmetric algorithms only: a JWKS holds public keys, and an HMAC algorithm here would invite
# key-confusion attacks. "none" is never acceptable.
OIDC_ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LOCAL_TOKEN_KEY_MIN_LENGTH = 32
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# Environment variable → field. The names are fixed: template.yaml and the local stack set them.
ENVIRONMENT_VARIABLES: dict[str, str] = {
    "AUTH_MODE": "auth_mode",
    "TASKS_API_ACCESS": "tasks_api_access",
    "OIDC_ISSUER": "oidc_issuer",
    "OIDC_AUDIENCE": "oidc_audience",
    "OIDC_JWKS_URL": "oidc_jwks_url",
    "OIDC_PROJECT_CLAIM": "oidc_project_claim",
    "OIDC_ROLES_CLAIM": "oidc_roles_claim",
    "OIDC_USER_CLAIM": "oidc_user_claim",
    "OIDC_ALGORITHMS": "oidc_algorithms",
    "KEYSTONE_URL": "keystone_url",
    "KEYSTONE_CREDENTIALS_SECRET": "keystone_credentials_secret",
    "LOCAL_TOKEN_KEY": "local_token_key",
}


class AuthSettings(BaseModel):
    """Settings for the chosen token kind. Fields of the other kinds are ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auth_mode: AuthMode
    tasks_api_access: ApiAccess = "member"

    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    oidc_project_claim: str = Field(default="custom:project_id", min_length=1)
    oidc_roles_claim: str = Field(default="cognito:groups", min_length=1)
    oidc_user_claim: str = Field(default="sub", min_length=1)
    oidc_algorithms: tuple[str, ...] = ("RS256",)

    keystone_url: str = ""
    keystone_credentials_secret: str = ""

    local_token_key: SecretStr = SecretStr("")

    @field_validator("auth_mode", "tasks_api_access", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("oidc_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(value.replace(",", " ").split())
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _only_asymmetric_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one algorithm is required")
        refused = [alg for alg in value if alg not in OIDC_ALLOWED_ALGORITHMS]
        if refused:
            raise ValueError(f"algorithms {refused} are not allowed; use {sorted(OIDC_ALLOWED_ALGORITHMS)}")
        return value

    @model_validator(mode="after")
    def _mode_has_what_it_needs(self) -> AuthSettings:
        if self.auth_mode == "oidc":
            missing = [
                name
                for name, value in (("OIDC_ISSUER", self.oidc_issuer), ("OIDC_AUDIENCE", self.oidc_audience))
                if not value
            ]
            if missing:
                raise ValueError(f"AUTH_MODE=oidc needs {', '.join(missing)}")
            _require_https_unless_loopback("OIDC_JWKS_URL", self.jwks_url)
        elif self.auth_mode == "keystone":
            if not self.keystone_url or not self.keystone_credentials_secret:
                raise ValueError("AUTH_MODE=keystone needs KEYSTONE_URL and KEYSTONE_CREDENTIALS_SECRET")
            # The service password and every user token travel to this URL: TLS unless on loopback.
            _require_https_unless_loopback("KEYSTONE_URL", self.keystone_url)
        elif len(self.local_token_key.get_secret_value()) < LOCAL_TOKEN_KEY_MIN_LENGTH:
            raise ValueError(
                f"AUTH_MODE=local needs LOCAL_TOKEN_KEY of at least {LOCAL_TOKEN_KEY_MIN_LENGTH} characters"
            )
        return self

    @property
    def jwks_url(self) -> str:
        """OIDC_JWKS_URL, or the issuer's `/.well-known/jwks.json` (where Cognito publishes it)."""
        return self.oidc_jwks_url or f"{self.oidc_issuer.rstrip('/')}/.well-known/jwks.json"

    @property
    def keystone_v3_url(self) -> str:
        """KEYSTONE_URL ending in `/v3`, whether or not it was configured with it."""
        base = self.keystone_url.rstrip("/")
        return base if base.endswith("/v3") else f"{base}/v3"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthSettings:
        """Read the settings; an empty variable counts as unset. Raises AuthConfigurationError."""
        source = os.environ if environ is None else environ
        values = {
            field: source[variable]
            for variable, field in ENVIRONMENT_VARIABLES.items()
            if source.get(variable, "").strip()
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            # The error text names fields, never values: LOCAL_TOKEN_KEY must not reach a log.
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg']}"
                for item in error.errors(include_input=False, include_url=False)
            )
            raise AuthConfigurationError(f"invalid auth settings: {problems}") from None


def _require_https_unless_loopback(name: str, url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in LOOPBACK_HOSTS):
        return
    raise ValueError(f"{name} must be an https URL (plain http only on a loopback address)")
