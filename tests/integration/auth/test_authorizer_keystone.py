"""The authorizer with Keystone tokens (AUTH_MODE=keystone): a fake Keystone v3 over HTTP on loopback,
the service credentials in Secrets Manager on moto."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from functions.authorizer import app
from imagetasks.auth import keystone
from tests.authorizer_support import (
    WILDCARD,
    QuietHandler,
    assert_unauthorized,
    authorizer_event,
    invoke,
    log_lines,
    serve_on_loopback,
    use_settings,
)

SECRET_ID = "imagetasks/keystone-service"
SERVICE_CREDENTIALS = {
    "username": "imagetasks",
    "password": "service-password-do-not-log",
    "project_name": "service",
    "user_domain_name": "Default",
    "project_domain_name": "Default",
}


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


@dataclass
class FakeKeystone:
    """Just enough of Keystone v3 token auth: password login (POST) and token validation (GET)."""

    service_token_ttl: timedelta = timedelta(hours=1)
    service_tokens: dict[str, datetime] = field(default_factory=dict)
    user_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    logins: int = 0
    validations: int = 0
    paths: list[str] = field(default_factory=list)
    fail_with: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user_token(
        self,
        token: str,
        *,
        project_id: str | None = "project-a",
        user_id: str = "user-alice",
        roles: tuple[str, ...] = ("member", "reader"),
        expires_in: timedelta = timedelta(hours=1),
    ) -> None:
        body: dict[str, Any] = {
            "methods": ["password"],
            "user": {"id": user_id, "name": "alice", "domain": {"id": "default", "name": "Default"}},
            "roles": [{"id": f"role-{name}", "name": name} for name in roles],
            "issued_at": iso(datetime.now(UTC)),
            "expires_at": iso(datetime.now(UTC) + expires_in),
            "audit_ids": ["a1"],
        }
        if project_id is not None:
            body["project"] = {
                "id": project_id,
                "name": project_id,
                "domain": {"id": "default", "name": "Default"},
            }
        else:
            body["domain"] = {"id": "default", "name": "Default"}
        self.user_tokens[token] = body

    def login(self, request: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        auth = request.get("auth", {})
        user = auth.get("identity", {}).get("password", {}).get("user", {})
        project = auth.get("scope", {}).get("project", {})
        expected = SERVICE_CREDENTIALS
        if (
            auth.get("identity", {}).get("methods") != ["password"]
            or user.get("name") != expected["username"]
            or user.get("password") != expected["password"]
            or user.get("domain", {}).get("name") != expected["user_domain_name"]
            or project.get("name") != expected["project_name"]
            or project.get("domain", {}).get("name") != expected["project_domain_name"]
        ):
            return 401, {}, {"error": {"code": 401, "title": "Unauthorized", "message": "bad credentials"}}
        self.logins += 1
        token = f"service-token-{self.logins}"
        expires_at = datetime.now(UTC) + self.service_token_ttl
        self.service_tokens[token] = expires_at
        body = {
            "token": {
                "methods": ["password"],
                "user": {"id": "svc-user", "name": expected["username"]},
                "project": {"id": "svc-project", "name": expected["project_name"]},
                "roles": [{"id": "role-service", "name": "service"}],
                "expires_at": iso(expires_at),
            }
        }
        return 201, {"X-Subject-Token": token}, body

    def validate(self, service_token: str, subject_token: str) -> tuple[int, dict[str, Any]]:
        self.validations += 1
        expiry = self.service_tokens.get(service_token)
        if expiry is None or expiry <= datetime.now(UTC):
            return 401, {"error": {"code": 401, "title": "Unauthorized", "message": "invalid service token"}}
        body = self.user_tokens.get(subject_token)
        if body is None or datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC
        ) <= datetime.now(UTC):
            return 404, {"error": {"code": 404, "title": "Not Found", "message": "token not found"}}
        return 200, {"token": body}


@pytest.fixture(scope="module")
def keystone_server() -> Iterator[tuple[dict[str, FakeKeystone], str]]:
    """One loopback server for the module; `holder["keystone"]` is swapped for a fresh fake per test."""
    holder: dict[str, FakeKeystone] = {}

    class Handler(QuietHandler):
        def _answer(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in ({"Content-Type": "application/json"} | headers).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> bool:
            fake = holder["keystone"]
            with fake.lock:
                fake.paths.append(f"{self.command} {self.path}")
            if fake.fail_with is not None:
                self._answer(fake.fail_with, {}, {"error": {"code": fake.fail_with, "message": "down"}})
                return False
            if self.path.split("?")[0] != "/v3/auth/tokens":
                self._answer(404, {}, {"error": {"code": 404, "message": "no such path"}})
                return False
            return True

        def do_POST(self) -> None:
            if not self._route():
                return
            fake = holder["keystone"]
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            with fake.lock:
                status, headers, body = fake.login(request)
            self._answer(status, headers, body)

        def do_GET(self) -> None:
            if not self._route():
                return
            fake = holder["keystone"]
            with fake.lock:
                status, body = fake.validate(
                    self.headers.get("X-Auth-Token", ""), self.headers.get("X-Subject-Token", "")
                )
            self._answer(status, {}, body)

    with serve_on_loopback(Handler) as base_url:
        yield holder, base_url


@pytest.fixture
def fake_keystone(keystone_server: tuple[dict[str, FakeKeystone], str]) -> FakeKeystone:
    holder, _ = keystone_server
    holder["keystone"] = FakeKeystone()
    holder["keystone"].add_user_token("alice-token")
    return holder["keystone"]


@pytest.fixture
def keystone_base_url(keystone_server: tuple[dict[str, FakeKeystone], str]) -> str:
    return keystone_server[1]


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    """moto for the whole module (starting it per test would dominate the run time)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }.items():
            patch.setenv(name, value)
        with mock_aws():
            yield boto3.client("secretsmanager", region_name="us-east-1")


@pytest.fixture
def secretsmanager(aws: Any) -> Iterator[Any]:
    """The service credentials secret, as the deployment stores it; removed again after the test."""
    aws.create_secret(Name=SECRET_ID, SecretString=json.dumps(SERVICE_CREDENTIALS))
    parameters.clear_caches()
    yield aws
    parameters.clear_caches()
    aws.delete_secret(SecretId=SECRET_ID, ForceDeleteWithoutRecovery=True)


@pytest.fixture(autouse=True)
def keystone_mode(
    monkeypatch: pytest.MonkeyPatch, secretsmanager: Any, fake_keystone: FakeKeystone, keystone_base_url: str
) -> Iterator[None]:
    use_settings(
        monkeypatch,
        AUTH_MODE="keystone",
        TASKS_API_ACCESS="member",
        KEYSTONE_URL=keystone_base_url,
        KEYSTONE_CREDENTIALS_SECRET=SECRET_ID,
    )
    yield
    app.get_authorizer.cache_clear()


@pytest.mark.parametrize("suffix", ["", "/", "/v3", "/v3/"])
def test_valid_keystone_token_is_allowed_with_keystones_project_user_and_roles(
    monkeypatch: pytest.MonkeyPatch, fake_keystone: FakeKeystone, keystone_base_url: str, suffix: str
) -> None:
    # Given KEYSTONE_URL written with or without /v3, and a project-scoped token Keystone knows
    use_settings(monkeypatch, KEYSTONE_URL=keystone_base_url + suffix)

    # When API Gateway asks the authorizer
    response = invoke(authorizer_event("alice-token"))

    # Then every route is allowed, with project, user and role names from Keystone's answer
    assert response["principalId"] == "user-alice"
    assert response["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": [WILDCARD]}
    ]
    assert response["context"] == {
        "project_id": "project-a",
        "user_id": "user-alice",
        "roles": "member,reader",
    }
    assert fake_keystone.paths == ["POST /v3/auth/tokens?nocatalog", "GET /v3/auth/tokens?nocatalog"]


def test_the_service_token_is_reused_across_invocations(fake_keystone: FakeKeystone) -> None:
    # Given three users' tokens
    fake_keystone.add_user_token("bob-token", user_id="user-bob")
    fake_keystone.add_user_token("carol-token", user_id="user-carol")

    # When each is authorized
    users = [invoke(authorizer_event(t))["principalId"] for t in ("alice-token", "bob-token", "carol-token")]

    # Then the authorizer logged in to Keystone once and validated three times
    assert users == ["user-alice", "user-bob", "user-carol"]
    assert (fake_keystone.logins, fake_keystone.validations) == (1, 3)


def test_a_service_token_close_to_expiry_is_renewed(fake_keystone: FakeKeystone) -> None:
    # Given a Keystone that issues service tokens valid for less than the renewal margin
    fake_keystone.service_token_ttl = timedelta(seconds=30)

    # When two requests are authorized
    invoke(authorizer_event("alice-token"))
    invoke(authorizer_event("alice-token"))

    # Then each one needed a fresh service token
    assert fake_keystone.logins == 2


def test_a_revoked_service_token_is_replaced_once(
    monkeypatch: pytest.MonkeyPatch, fake_keystone: FakeKeystone
) -> None:
    # Given a cached service token that Keystone then revokes (and no minimum age before renewal)
    monkeypatch.setattr(keystone, "SERVICE_TOKEN_MIN_AGE_BEFORE_RENEWAL_SECONDS", 0.0)
    invoke(authorizer_event("alice-token"))
    fake_keystone.service_tokens.clear()

    # When the next request arrives
    response = invoke(authorizer_event("alice-token"))

    # Then the authorizer logged in again and the request is allowed
    assert response["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert fake_keystone.logins == 2


def test_a_fresh_service_token_that_is_refused_is_not_renewed_in_a_loop(fake_keystone: FakeKeystone) -> None:
    # Given a Keystone that refuses every service token it has just issued
    invoke(authorizer_event("alice-token"))
    fake_keystone.service_tokens.clear()

    # When the next request arrives (the cached service token is seconds old)
    assert_unauthorized(authorizer_event("alice-token"))

    # Then the authorizer did not log in again for it
    assert fake_keystone.logins == 1


@pytest.mark.parametrize(
    ("token", "setup"),
    [
        ("unknown-token", {}),
        ("expired-token", {"expires_in": timedelta(seconds=-5)}),
        ("domain-scoped-token", {"project_id": None}),
        ("not a keystone token at all", None),
    ],
)
def test_tokens_keystone_does_not_vouch_for_a_project_are_unauthorized(
    fake_keystone: FakeKeystone, caplog: pytest.LogCaptureFixture, token: str, setup: dict[str, Any] | None
) -> None:
    # Given a token Keystone does not know, has expired, or is not scoped to a project
    if setup:
        fake_keystone.add_user_token(token, **setup)

    # When / Then the authorizer refuses it as a bad token (info), not as an outage (error)
    assert_unauthorized(authorizer_event(token))
    assert len(log_lines(caplog, "INFO")) == 1
    assert log_lines(caplog, "ERROR") == []


def test_member_is_denied_when_the_deployment_requires_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an admin-only deployment and a member's valid token
    use_settings(monkeypatch, TASKS_API_ACCESS="admin")

    # When it is authorized
    response = invoke(authorizer_event("alice-token"))

    # Then API Gateway gets a Deny policy (403)
    assert response["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": [WILDCARD]}
    ]


def test_admin_is_allowed_when_the_deployment_requires_admin(
    monkeypatch: pytest.MonkeyPatch, fake_keystone: FakeKeystone
) -> None:
    use_settings(monkeypatch, TASKS_API_ACCESS="admin")
    fake_keystone.add_user_token("root-token", user_id="user-root", roles=("admin", "member"))
    assert invoke(authorizer_event("root-token"))["policyDocument"]["Statement"][0]["Effect"] == "Allow"


def test_forged_identity_headers_never_change_who_the_caller_is() -> None:
    # Given a member's token plus headers claiming another project, user and admin
    forged = {"X-Project-Id": "project-b", "X-Roles": "admin", "X-User-Id": "root"}

    # When it is authorized
    context = invoke(authorizer_event("alice-token", forged))["context"]

    # Then the identity is Keystone's
    assert context == {"project_id": "project-a", "user_id": "user-alice", "roles": "member,reader"}


@pytest.mark.parametrize("token", [None, "", "x" * (8 * 1024 + 1)])
def test_missing_or_oversized_tokens_never_reach_keystone(
    fake_keystone: FakeKeystone, token: str | None
) -> None:
    assert_unauthorized(authorizer_event(token))
    assert fake_keystone.paths == []


def test_an_unreachable_keystone_means_unauthorized_and_an_error_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a KEYSTONE_URL where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    use_settings(monkeypatch, KEYSTONE_URL=f"http://127.0.0.1:{closed_port}/v3")

    # When / Then the request is refused and the outage logged as an error
    assert_unauthorized(authorizer_event("alice-token"))
    assert log_lines(caplog, "ERROR") == [
        "identity provider unavailable; refusing the request: Keystone unreachable: NewConnectionError"
    ]


def test_a_failing_keystone_means_unauthorized_and_an_error_log(
    fake_keystone: FakeKeystone, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a Keystone that answers 503
    fake_keystone.fail_with = 503

    # When / Then
    assert_unauthorized(authorizer_event("alice-token"))
    assert len(log_lines(caplog, "ERROR")) == 1


def test_wrong_service_credentials_mean_unauthorized_and_an_error_log(
    secretsmanager: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a secret whose password Keystone does not accept
    secretsmanager.put_secret_value(
        SecretId=SECRET_ID, SecretString=json.dumps(SERVICE_CREDENTIALS | {"password": "x"})
    )

    # When / Then
    assert_unauthorized(authorizer_event("alice-token"))
    assert log_lines(caplog, "ERROR") == [
        "identity provider unavailable; refusing the request: Keystone refused the service login (401)"
    ]


@pytest.mark.parametrize(
    "secret_string", [None, "not json", json.dumps({"username": "imagetasks", "password": "p"})]
)
def test_a_missing_or_unusable_secret_means_unauthorized(
    monkeypatch: pytest.MonkeyPatch,
    secretsmanager: Any,
    fake_keystone: FakeKeystone,
    caplog: pytest.LogCaptureFixture,
    secret_string: str | None,
) -> None:
    # Given a secret that does not exist, is not JSON, or lacks fields
    if secret_string is None:
        use_settings(monkeypatch, KEYSTONE_CREDENTIALS_SECRET="imagetasks/no-such-secret")
    else:
        secretsmanager.put_secret_value(SecretId=SECRET_ID, SecretString=secret_string)

    # When / Then the request is refused, Keystone never asked, and the cause logged as an error
    assert_unauthorized(authorizer_event("alice-token"))
    assert fake_keystone.paths == []
    assert len(log_lines(caplog, "ERROR")) == 1


def test_neither_tokens_nor_the_service_password_reach_the_logs(
    fake_keystone: FakeKeystone, caplog: pytest.LogCaptureFixture
) -> None:
    # Given one accepted and one refused request
    invoke(authorizer_event("alice-token"))
    with pytest.raises(Exception, match="Unauthorized"):
        invoke(authorizer_event("unknown-token"))

    # Then no log record carries the user tokens, the service token or the service password
    logs = "\n".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert [r.getMessage() for r in caplog.records] == ["allowed", "token refused"]
    for secret in ("alice-token", "unknown-token", "service-token-1", SERVICE_CREDENTIALS["password"]):
        assert secret not in logs


@pytest.mark.parametrize(
    "token",
    ["alice-token\r\nX-Injected: 1", "alice\ntoken", "alice\x00token", "tökén", "token-\u20ac", "a b"],
)
def test_tokens_with_characters_no_keystone_token_has_are_401_and_never_reach_keystone(
    fake_keystone: FakeKeystone, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    # (CR/LF and characters outside latin-1 used to make http.client raise: a 500 from API Gateway)
    assert_unauthorized(authorizer_event(token))
    assert fake_keystone.paths == []
    assert log_lines(caplog, "INFO")[-1] == "token refused: token has characters no Keystone token has"


@pytest.mark.parametrize(
    "url", ["http://keystone.invalid:5000/v3", "http://10.0.0.5/identity", "ftp://keystone.invalid/v3"]
)
def test_a_keystone_url_without_tls_off_loopback_is_refused_at_configuration(
    monkeypatch: pytest.MonkeyPatch, fake_keystone: FakeKeystone, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    # Given a deployment pointing at Keystone over plain http (the service password would travel in clear)
    use_settings(monkeypatch, KEYSTONE_URL=url)

    # When / Then every request is refused as a configuration error, naming the setting
    assert_unauthorized(authorizer_event("alice-token"))
    assert fake_keystone.paths == []
    assert log_lines(caplog, "ERROR") == [
        "authorizer misconfigured; refusing every request: invalid auth settings: settings: "
        "Value error, KEYSTONE_URL must be an https URL (plain http only on a loopback address)"
    ]


def test_https_and_loopback_keystone_urls_are_accepted() -> None:
    from imagetasks.auth.settings import AuthSettings

    for url in ("https://keystone.invalid/v3", "http://127.0.0.1:5000", "http://localhost/identity"):
        settings = AuthSettings.from_env(
            {"AUTH_MODE": "keystone", "KEYSTONE_URL": url, "KEYSTONE_CREDENTIALS_SECRET": SECRET_ID}
        )
        assert settings.keystone_url == url
