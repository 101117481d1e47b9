"""Keystone v3 tokens: ask Keystone (`GET /v3/auth/tokens`) with a service token of our own."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import urllib3
from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr, ValidationError

from imagetasks.auth.errors import IdentityProviderUnavailableError, InvalidTokenError
from imagetasks.auth.identity import Caller

HTTP_TIMEOUT = urllib3.Timeout(connect=2.0, read=5.0)
# Renew the service token this long before Keystone says it expires.
SERVICE_TOKEN_MARGIN = timedelta(seconds=60)
# A 401 on validation may mean our service token was revoked early; renew it then, but not more often than
# this, so a stream of bad tokens cannot make us log in to Keystone on every request.
SERVICE_TOKEN_MIN_AGE_BEFORE_RENEWAL_SECONDS = 30.0
SECRET_MAX_AGE_SECONDS = 300
# Keystone tokens (Fernet, JWS, UUID) are printable ASCII. Anything else cannot be a token, and CR/LF
# or a character outside latin-1 cannot even go into the X-Subject-Token header (http.client raises).
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")


class KeystoneCredentials(BaseModel):
    """The service user's password credentials, as stored in Secrets Manager (JSON)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    username: str
    password: SecretStr
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"

    def password_auth_body(self) -> dict[str, Any]:
        return {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.username,
                            "domain": {"name": self.user_domain_name},
                            "password": self.password.get_secret_value(),
                        }
                    },
                },
                "scope": {
                    "project": {"name": self.project_name, "domain": {"name": self.project_domain_name}}
                },
            }
        }


CredentialsLoader = Callable[[], KeystoneCredentials]


def credentials_from_secret(secret_id: str) -> CredentialsLoader:
    """Load the credentials with Powertools parameters (cached for a few minutes, fetched lazily)."""

    def load() -> KeystoneCredentials:
        from aws_lambda_powertools.utilities import parameters

        try:
            value = parameters.get_secret(secret_id, transform="json", max_age=SECRET_MAX_AGE_SECONDS)
            return KeystoneCredentials.model_validate(value)
        except ValidationError as error:
            fields = sorted(
                {str(item["loc"][0]) for item in error.errors(include_input=False) if item["loc"]}
            )
            raise IdentityProviderUnavailableError(f"Keystone credentials secret lacks {fields}") from None
        except Exception as error:
            raise IdentityProviderUnavailableError(
                f"Keystone credentials secret unreadable: {type(error).__name__}"
            ) from None

    return load


def _assume_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_assume_utc)]


class _Reference(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str | None = None


class _KeystoneToken(BaseModel):
    model_config = ConfigDict(extra="ignore")

    expires_at: UtcDatetime
    user: _Reference
    project: _Reference | None = None
    roles: list[_Reference] = []


class _KeystoneTokenAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    token: _KeystoneToken


class _ServiceTokenExpiry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    expires_at: UtcDatetime


class _ServiceTokenAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    token: _ServiceTokenExpiry


class _ServiceToken(BaseModel):
    value: SecretStr
    expires_at: UtcDatetime
    obtained_at: float


class KeystoneVerifier:
    def __init__(
        self,
        *,
        v3_url: str,
        credentials: CredentialsLoader,
        http: urllib3.PoolManager | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._v3_url = v3_url.rstrip("/")
        self._credentials = credentials
        self._http = http or urllib3.PoolManager(timeout=HTTP_TIMEOUT, retries=False)
        self._now = now
        self._service_token: _ServiceToken | None = None
        self._lock = threading.Lock()

    def verify(self, token: str) -> Caller:
        if not _TOKEN_CHARACTERS.fullmatch(token):
            raise InvalidTokenError("token has characters no Keystone token has")
        service_token = self._current_service_token()
        status, body = self._validate(service_token, token)
        if status == 401 and self._may_renew(service_token):
            self._forget(service_token)
            status, body = self._validate(self._current_service_token(), token)
        if status in (401, 404):
            raise InvalidTokenError(f"Keystone rejected the token ({status})")
        if status != 200:
            raise IdentityProviderUnavailableError(f"Keystone answered {status} to token validation")
        return self._caller_from(body)

    def _validate(self, service_token: _ServiceToken, token: str) -> tuple[int, bytes]:
        headers = {
            "X-Auth-Token": service_token.value.get_secret_value(),
            "X-Subject-Token": token,
            "Accept": "application/json",
        }
        response = self._request("GET", f"{self._v3_url}/auth/tokens?nocatalog", headers=headers)
        return response.status, response.data

    def _caller_from(self, body: bytes) -> Caller:
        try:
            answer = _KeystoneTokenAnswer.model_validate_json(body)
        except ValidationError:
            raise IdentityProviderUnavailableError("Keystone's token answer is not understood") from None
        keystone_token = answer.token
        if keystone_token.expires_at <= self._now():
            raise InvalidTokenError("Keystone token has expired")
        if keystone_token.project is None:
            raise InvalidTokenError("Keystone token is not scoped to a project")
        try:
            return Caller(
                project_id=keystone_token.project.id,
                user_id=keystone_token.user.id,
                roles=[role.name for role in keystone_token.roles if role.name],
            )
        except ValueError:
            raise InvalidTokenError("Keystone token does not describe a caller") from None

    def _current_service_token(self) -> _ServiceToken:
        with self._lock:
            cached = self._service_token
            if cached is not None and self._now() < cached.expires_at - SERVICE_TOKEN_MARGIN:
                return cached
            self._service_token = self._issue_service_token()
            return self._service_token

    def _may_renew(self, service_token: _ServiceToken) -> bool:
        return time.monotonic() - service_token.obtained_at >= SERVICE_TOKEN_MIN_AGE_BEFORE_RENEWAL_SECONDS

    def _forget(self, service_token: _ServiceToken) -> None:
        with self._lock:
            if self._service_token is service_token:
                self._service_token = None

    def _issue_service_token(self) -> _ServiceToken:
        body = json.dumps(self._credentials().password_auth_body()).encode()
        response = self._request(
            "POST",
            f"{self._v3_url}/auth/tokens?nocatalog",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
        )
        subject_token = response.headers.get("X-Subject-Token")
        if response.status != 201 or not subject_token:
            raise IdentityProviderUnavailableError(f"Keystone refused the service login ({response.status})")
        try:
            expires_at = _ServiceTokenAnswer.model_validate_json(response.data).token.expires_at
        except ValidationError:
            raise IdentityProviderUnavailableError(
                "Keystone's service token answer is not understood"
            ) from None
        return _ServiceToken(
            value=SecretStr(subject_token), expires_at=expires_at, obtained_at=time.monotonic()
        )

    def _request(
        self, method: str, url: str, *, headers: dict[str, str], body: bytes | None = None
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self._http.request(
                method, url, headers=headers, body=body, timeout=HTTP_TIMEOUT, retries=False, redirect=False
            )
        except urllib3.exceptions.HTTPError as error:
            raise IdentityProviderUnavailableError(f"Keystone unreachable: {type(error).__name__}") from None
