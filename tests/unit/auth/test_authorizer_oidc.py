"""The authorizer with OIDC/JWT tokens (AUTH_MODE=oidc), keys served from a JWKS on a loopback HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from functions.authorizer import app
from imagetasks.auth import oidc
from tests.authorizer_support import (
    WILDCARD,
    QuietHandler,
    assert_unauthorized,
    authorizer_event,
    invoke,
    serve_on_loopback,
    use_settings,
)

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example"
AUDIENCE = "client-id-123"
KID = "key-1"


@dataclass
class Jwks:
    """What the fake issuer serves, and how often it was asked."""

    keys: list[dict[str, Any]]
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def refusal_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The `reason` field of each "token refused" log line (never the token itself)."""
    return [str(getattr(r, "reason", "")) for r in caplog.records if r.getMessage() == "token refused"]


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[tuple[Jwks, str]]:
    """One loopback JWKS endpoint for the module; each test resets what it serves."""
    served = Jwks(keys=[])

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            with served.lock:
                served.fetches += 1
                body = json.dumps({"keys": served.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_on_loopback(Handler) as base_url:
        yield served, f"{base_url}/.well-known/jwks.json"


@pytest.fixture
def jwks(jwks_server: tuple[Jwks, str], signing_key: rsa.RSAPrivateKey) -> Jwks:
    served, _ = jwks_server
    public_jwk = RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    with served.lock:
        served.keys = [public_jwk | {"kid": KID, "use": "sig", "alg": "RS256"}]
        served.fetches = 0
    return served


@pytest.fixture
def jwks_url(jwks_server: tuple[Jwks, str], jwks: Jwks) -> str:
    return jwks_server[1]


@pytest.fixture(autouse=True)
def oidc_mode(monkeypatch: pytest.MonkeyPatch, jwks_url: str) -> Iterator[None]:
    for name, value in {
        "AUTH_MODE": "oidc",
        "TASKS_API_ACCESS": "member",
        "OIDC_ISSUER": ISSUER,
        "OIDC_AUDIENCE": AUDIENCE,
        "OIDC_JWKS_URL": jwks_url,
        "OIDC_PROJECT_CLAIM": "",
        "OIDC_ROLES_CLAIM": "",
        "OIDC_USER_CLAIM": "",
        "OIDC_ALGORITHMS": "",
    }.items():
        monkeypatch.setenv(name, value)
    # A fresh key cache per test: each test has its own JWKS server.
    monkeypatch.setattr(oidc, "_jwks_clients", {})
    app.get_authorizer.cache_clear()
    yield
    app.get_authorizer.cache_clear()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "3f1e0c5a-user-alice",
        "custom:project_id": "project-a",
        "cognito:groups": ["member"],
        "token_use": "id",
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def rs256(payload: dict[str, Any], key: rsa.RSAPrivateKey, kid: str | None = KID, alg: str = "RS256") -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_id_token_is_allowed_with_project_user_and_groups(signing_key: rsa.RSAPrivateKey) -> None:
    # Given an ID token from the user pool, with the project claim and two groups
    token = rs256(claims(**{"cognito:groups": ["member", "admin"]}), signing_key)

    # When API Gateway asks the authorizer
    response = invoke(authorizer_event(token))

    # Then every route of the stage is allowed and the context carries the token's identity
    assert response["principalId"] == "3f1e0c5a-user-alice"
    assert response["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": [WILDCARD]}
    ]
    assert response["context"] == {
        "project_id": "project-a",
        "user_id": "3f1e0c5a-user-alice",
        "roles": "member,admin",
    }


def test_roles_claim_may_be_a_comma_or_space_separated_string(signing_key: rsa.RSAPrivateKey) -> None:
    # Given a provider that sends roles as one string
    token = rs256(claims(**{"cognito:groups": "member, reader admin"}), signing_key)

    # When / Then the roles are split into names
    assert invoke(authorizer_event(token))["context"]["roles"] == "member,reader,admin"


def test_claim_names_come_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, signing_key: rsa.RSAPrivateKey
) -> None:
    # Given a deployment whose provider names the claims differently
    use_settings(monkeypatch, OIDC_PROJECT_CLAIM="tenant", OIDC_ROLES_CLAIM="roles", OIDC_USER_CLAIM="email")
    payload = claims(tenant="project-t", roles=["admin"], email="t@example.invalid")

    # When such a token arrives
    context = invoke(authorizer_event(rs256(payload, signing_key)))["context"]

    # Then those claims, not the defaults, make the identity
    assert context == {"project_id": "project-t", "user_id": "t@example.invalid", "roles": "admin"}


def test_keys_are_cached_across_invocations(signing_key: rsa.RSAPrivateKey, jwks: Jwks) -> None:
    # Given three different valid tokens
    tokens = [rs256(claims(sub=f"user-{n}"), signing_key) for n in range(3)]

    # When each is authorized
    users = [invoke(authorizer_event(token))["principalId"] for token in tokens]

    # Then the JWKS was fetched once
    assert users == ["user-0", "user-1", "user-2"]
    assert jwks.fetches == 1


def test_member_is_denied_when_the_deployment_requires_admin(
    monkeypatch: pytest.MonkeyPatch, signing_key: rsa.RSAPrivateKey
) -> None:
    # Given an admin-only deployment and a member's valid token
    use_settings(monkeypatch, TASKS_API_ACCESS="admin")
    token = rs256(claims(), signing_key)

    # When it is authorized
    response = invoke(authorizer_event(token))

    # Then API Gateway gets a Deny policy (403)
    assert response["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": [WILDCARD]}
    ]


def test_admin_is_allowed_when_the_deployment_requires_admin(
    monkeypatch: pytest.MonkeyPatch, signing_key: rsa.RSAPrivateKey
) -> None:
    use_settings(monkeypatch, TASKS_API_ACCESS="admin")
    token = rs256(claims(**{"cognito:groups": ["admin"]}), signing_key)
    assert invoke(authorizer_event(token))["policyDocument"]["Statement"][0]["Effect"] == "Allow"


def test_forged_identity_headers_never_change_who_the_caller_is(signing_key: rsa.RSAPrivateKey) -> None:
    # Given a member's token plus headers claiming another project, user and admin
    token = rs256(claims(), signing_key)
    forged = {"X-Project-Id": "project-b", "X-Roles": "admin", "X-User-Id": "root"}

    # When it is authorized
    context = invoke(authorizer_event(token, forged))["context"]

    # Then the identity is the token's
    assert context == {"project_id": "project-a", "user_id": "3f1e0c5a-user-alice", "roles": "member"}


def test_a_token_signed_with_a_key_not_in_the_jwks_is_unauthorized(
    other_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a token that names the issuer's kid but is signed with another key (bad signature)
    assert_unauthorized(authorizer_event(rs256(claims(), other_key)))
    assert refusal_reasons(caplog) == ["token rejected: InvalidSignatureError"]


def test_a_kid_not_in_the_jwks_is_unauthorized(
    signing_key: rsa.RSAPrivateKey, jwks: Jwks, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a well-signed token whose kid the issuer does not publish
    token = rs256(claims(), signing_key, kid="unknown-kid")

    # When / Then it is refused, and the unknown kid did not trigger a JWKS refetch storm
    assert_unauthorized(authorizer_event(token))
    assert_unauthorized(authorizer_event(token))
    assert refusal_reasons(caplog) == ["token key id is not in the JWKS"] * 2
    assert jwks.fetches == 1


def test_alg_none_is_unauthorized(jwks: Jwks, caplog: pytest.LogCaptureFixture) -> None:
    # Given an unsigned token with the issuer's kid
    token = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': KID})}.{b64(claims())}."

    # When / Then it is refused before any key lookup
    assert_unauthorized(authorizer_event(token))
    assert refusal_reasons(caplog) == ["token algorithm is not allowed"]
    assert jwks.fetches == 0


def test_hmac_signed_with_the_public_key_is_unauthorized(
    signing_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the classic key-confusion forgery: HS256 keyed with the issuer's public key bytes
    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64({"alg": "HS256", "typ": "JWT", "kid": KID})
    payload = b64(claims(**{"cognito:groups": ["admin"]}))
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

    # When / Then it is refused for its algorithm
    assert_unauthorized(authorizer_event(token))
    assert refusal_reasons(caplog) == ["token algorithm is not allowed"]


def test_an_algorithm_outside_the_allowed_list_is_unauthorized(
    signing_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a token signed RS512 with the issuer's key, while only RS256 is allowed
    assert_unauthorized(authorizer_event(rs256(claims(), signing_key, alg="RS512")))
    assert refusal_reasons(caplog) == ["token algorithm is not allowed"]


def test_an_allowed_algorithm_must_also_match_the_published_key(
    monkeypatch: pytest.MonkeyPatch, signing_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Given RS256 and RS512 allowed, the key published for RS256, and a token signed RS512 with it
    use_settings(monkeypatch, OIDC_ALGORITHMS="RS256,RS512")

    # When / Then the key's own algorithm wins over the token header
    assert_unauthorized(authorizer_event(rs256(claims(), signing_key, alg="RS512")))
    assert refusal_reasons(caplog) == ["token rejected: InvalidAlgorithmError"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, "ExpiredSignatureError"),
        ({"exp": None}, "MissingRequiredClaimError"),
        ({"iss": "https://evil.example.invalid"}, "InvalidIssuerError"),
        ({"iss": None}, "MissingRequiredClaimError"),
        ({"aud": "another-client"}, "InvalidAudienceError"),
        ({"aud": None}, "MissingRequiredClaimError"),
        ({"nbf": int(time.time()) + 3600}, "ImmatureSignatureError"),
        ({"custom:project_id": None}, "token has no custom:project_id claim"),
        ({"custom:project_id": ""}, "token has no custom:project_id claim"),
        ({"custom:project_id": ["project-a"]}, "token has no custom:project_id claim"),
        ({"sub": None}, "token has no sub claim"),
    ],
)
def test_unacceptable_claims_are_unauthorized(
    signing_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture, overrides: dict[str, Any], reason: str
) -> None:
    # Given a correctly signed token whose claims are unacceptable
    token = rs256(claims(**overrides), signing_key)

    # When / Then it is refused for that reason
    assert_unauthorized(authorizer_event(token))
    reasons = refusal_reasons(caplog)
    assert len(reasons) == 1
    assert reason in reasons[0]


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b.c", "....", f"{b64({'alg': 'RS256'})}.e30.", "eyJ" + "A" * 40],
)
def test_missing_or_malformed_token_is_unauthorized(token: str, jwks: Jwks) -> None:
    assert_unauthorized(authorizer_event(token))


def test_a_token_without_a_kid_is_unauthorized(signing_key: rsa.RSAPrivateKey) -> None:
    assert_unauthorized(authorizer_event(rs256(claims(), signing_key, kid=None)))


def test_missing_header_is_unauthorized() -> None:
    assert_unauthorized(authorizer_event(None))


def test_an_oversized_token_is_refused_before_parsing(
    signing_key: rsa.RSAPrivateKey, jwks: Jwks, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a validly signed token of more than 8 KiB
    token = rs256(claims(padding="p" * 9000), signing_key)

    # When / Then it is refused without the keys ever being fetched
    assert_unauthorized(authorizer_event(token))
    assert refusal_reasons(caplog) == ["token is oversized"]
    assert jwks.fetches == 0


def test_an_unreachable_jwks_endpoint_means_unauthorized(
    monkeypatch: pytest.MonkeyPatch, signing_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a JWKS URL where nothing listens
    use_settings(monkeypatch, OIDC_JWKS_URL="http://127.0.0.1:9/jwks.json")

    # When a valid token arrives
    assert_unauthorized(authorizer_event(rs256(claims(), signing_key)))

    # Then the outage is logged as an error
    assert [r.levelname for r in caplog.records] == ["ERROR"]


@pytest.mark.parametrize(
    "variables",
    [
        {"OIDC_ALGORITHMS": "HS256"},
        {"OIDC_ALGORITHMS": "none"},
        {"OIDC_ISSUER": ""},
        {"OIDC_AUDIENCE": ""},
        {"OIDC_JWKS_URL": "http://jwks.example.invalid/keys"},
        {"AUTH_MODE": "basic"},
        {"TASKS_API_ACCESS": "everyone"},
    ],
)
def test_unusable_settings_refuse_every_request(
    monkeypatch: pytest.MonkeyPatch, signing_key: rsa.RSAPrivateKey, variables: dict[str, str]
) -> None:
    # Given a misconfigured deployment (HMAC or none allowed, no issuer/audience, keys over plain http...)
    use_settings(monkeypatch, **variables)

    # When / Then even a valid token is refused: the authorizer fails closed
    assert_unauthorized(authorizer_event(rs256(claims(), signing_key)))
