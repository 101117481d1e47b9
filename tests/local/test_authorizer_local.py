"""The authorizer with local tokens (AUTH_MODE=local), through its Lambda handler."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from functions.authorizer import app
from imagetasks.auth.local import LOCAL_ALGORITHM, LOCAL_ISSUER, LocalTokenVerifier
from local import tokens
from local.tokens import mint_local_token
from tests.authorizer_support import (
    EVENT_NAME,
    WILDCARD,
    assert_unauthorized,
    authorizer_event,
    invoke,
    use_settings,
)
from tests.support import load_event

KEY = "k" * 32 + "0123456789abcdef0123456789abcdef"
OTHER_KEY = "x" * 64


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": LOCAL_ISSUER,
        "sub": "alice",
        "project_id": "project-a",
        "roles": ["member"],
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], key: str = KEY, algorithm: str = LOCAL_ALGORITHM) -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def unsigned_token(payload: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


@pytest.fixture(autouse=True)
def local_mode(monkeypatch: pytest.MonkeyPatch) -> Any:
    use_settings(monkeypatch, AUTH_MODE="local", LOCAL_TOKEN_KEY=KEY, TASKS_API_ACCESS="member")
    yield
    app.get_authorizer.cache_clear()


def test_valid_member_token_is_allowed_on_every_route_with_its_identity() -> None:
    # Given a member token minted the way the local stack mints them
    token = mint_local_token(KEY, "project-a", "alice", ["member", "reader"])

    # When API Gateway asks the authorizer
    response = invoke(authorizer_event(token))

    # Then it allows every method of the stage and passes the identity as string context
    assert response["principalId"] == "alice"
    assert response["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": [WILDCARD]}
    ]
    assert response["context"] == {"project_id": "project-a", "user_id": "alice", "roles": "member,reader"}


def test_admin_token_is_allowed_when_the_deployment_requires_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a deployment that limits the API to admins (Glance's default policy)
    use_settings(monkeypatch, TASKS_API_ACCESS="admin")
    token = mint_local_token(KEY, "project-a", "root", ["member", "admin"])

    # When an admin calls
    response = invoke(authorizer_event(token))

    # Then the admin is allowed
    assert response["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert response["context"]["roles"] == "member,admin"


def test_member_token_is_denied_when_the_deployment_requires_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a deployment that limits the API to admins
    use_settings(monkeypatch, TASKS_API_ACCESS="admin")
    token = mint_local_token(KEY, "project-a", "alice", ["member"])

    # When a valid member token arrives
    response = invoke(authorizer_event(token))

    # Then the answer is a Deny policy (403), not Unauthorized (401), and carries no identity context
    assert response["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": [WILDCARD]}
    ]
    assert "context" not in response


def test_forged_identity_headers_never_change_who_the_caller_is(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a member of project-a who adds headers claiming another project, user and the admin role
    use_settings(monkeypatch, TASKS_API_ACCESS="admin")
    token = mint_local_token(KEY, "project-a", "alice", ["member"])
    forged = {
        "X-Project-Id": "project-b",
        "X-Roles": "admin",
        "X-User-Id": "root",
        "X-Tenant-Id": "project-b",
    }

    # When the request reaches the authorizer
    response = invoke(authorizer_event(token, forged))

    # Then only the token counts: still a member, so denied under admin-only access
    assert response["principalId"] == "alice"
    assert response["policyDocument"]["Statement"][0]["Effect"] == "Deny"


def test_forged_headers_do_not_change_the_context_of_an_allowed_member() -> None:
    # Given a member token and forged identity headers
    token = mint_local_token(KEY, "project-a", "alice", ["member"])
    forged = {"X-Project-Id": "project-b", "X-Roles": "admin", "X-User-Id": "root"}

    # When the authorizer allows the request
    response = invoke(authorizer_event(token, forged))

    # Then the context is the token's identity
    assert response["context"] == {"project_id": "project-a", "user_id": "alice", "roles": "member"}


@pytest.mark.parametrize(
    ("case", "token"),
    [
        ("expired", signed(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))),
        ("no expiry", signed(claims(exp=None))),
        ("wrong issuer", signed(claims(iss="someone-else"))),
        ("no issuer", signed(claims(iss=None))),
        ("bad signature", signed(claims(), key=OTHER_KEY)),
        ("alg none", unsigned_token(claims())),
        ("HS512 not allowed", signed(claims(), algorithm="HS512")),
        ("malformed", "not-a-jwt"),
        ("garbage segments", "a.b.c"),
        ("no project", signed(claims(project_id=None))),
        ("no user", signed(claims(sub=None))),
        ("roles not a list", signed(claims(roles="admin"))),
    ],
)
def test_unacceptable_local_token_is_unauthorized(case: str, token: str) -> None:
    # Given an unacceptable token (see case)
    event = authorizer_event(token)

    # When / Then the authorizer answers Unauthorized (API Gateway makes it a 401)
    assert_unauthorized(event)


def test_a_correctly_signed_but_oversized_token_is_refused() -> None:
    # Given a token that is validly signed but larger than 8 KiB
    token = signed(claims(padding="p" * 9000))
    assert LocalTokenVerifier(KEY).verify(token).project_id == "project-a"

    # When / Then the authorizer refuses it before verifying it
    assert_unauthorized(authorizer_event(token))


@pytest.mark.parametrize("token", [None, "", "   "])
def test_missing_or_empty_token_is_unauthorized(token: str | None) -> None:
    assert_unauthorized(authorizer_event(token))


def test_event_without_any_headers_is_unauthorized() -> None:
    # Given an event whose header maps are null (API Gateway sends null when there are none)
    event = authorizer_event(None)
    event["headers"] = None
    event["multiValueHeaders"] = None

    # When / Then
    assert_unauthorized(event)


def test_header_name_is_case_insensitive_and_multi_value_headers_are_read() -> None:
    # Given the token only in lower case in `headers`, and only in `multiValueHeaders` in another event
    token = mint_local_token(KEY, "project-a", "alice", ["member"])
    lower = authorizer_event(None, {"x-auth-token": token})
    lower["multiValueHeaders"] = None
    multi_only = authorizer_event(None)
    multi_only["multiValueHeaders"]["X-AUTH-TOKEN"] = [token]

    # When the authorizer reads them
    responses = [invoke(lower), invoke(multi_only)]

    # Then both find the token
    assert [r["context"]["user_id"] for r in responses] == ["alice", "alice"]


def test_two_different_tokens_in_one_request_are_unauthorized() -> None:
    # Given two valid tokens for different projects in the same request
    first = mint_local_token(KEY, "project-a", "alice", ["member"])
    second = mint_local_token(KEY, "project-b", "bob", ["admin"])
    event = authorizer_event(first)
    event["multiValueHeaders"]["X-Auth-Token"] = [first, second]

    # When / Then the ambiguity is refused rather than resolved in either caller's favour
    assert_unauthorized(event)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("weak_key", ["", "short", "s" * 31])
def test_local_mode_refuses_every_request_without_a_strong_key(
    monkeypatch: pytest.MonkeyPatch, weak_key: str
) -> None:
    # Given local mode with an empty or short key, and a token correctly signed with that key
    use_settings(monkeypatch, LOCAL_TOKEN_KEY=weak_key)
    token = jwt.encode(claims(), weak_key or KEY, algorithm="HS256")  # PyJWT cannot sign with ""

    # When / Then the authorizer fails closed
    assert_unauthorized(authorizer_event(token))


def test_a_methodarn_that_is_not_an_api_gateway_arn_is_unauthorized() -> None:
    # Given a valid token but a methodArn API Gateway would never send
    event = authorizer_event(mint_local_token(KEY, "project-a", "alice", ["member"]))
    event["methodArn"] = "not-an-arn"

    # When / Then the authorizer fails closed
    assert_unauthorized(event)


def test_the_token_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Given one accepted and one refused token
    good = mint_local_token(KEY, "project-a", "alice", ["member"])
    bad = signed(claims(), key=OTHER_KEY)

    # When both are authorized
    invoke(authorizer_event(good))
    with pytest.raises(Exception, match="Unauthorized"):
        invoke(authorizer_event(bad))

    # Then the logs (messages and every structured field) say what happened, without the tokens or the key
    logs = "\n".join(json.dumps(record.__dict__, default=str) for record in caplog.records)
    assert [record.getMessage() for record in caplog.records] == ["allowed", "token refused"]
    assert good not in logs
    assert bad not in logs
    assert KEY not in logs


def test_minted_tokens_carry_what_the_verifier_checks() -> None:
    # Given the minting side's constants and a minted token
    token = mint_local_token(KEY, "project-a", "alice", ["member", " admin "], ttl_seconds=60)

    # When the layer's verifier reads it
    caller = LocalTokenVerifier(KEY).verify(token)

    # Then both sides agree on issuer and algorithm, and the identity survives the round trip
    assert (tokens.LOCAL_ISSUER, tokens.LOCAL_ALGORITHM) == (LOCAL_ISSUER, LOCAL_ALGORITHM)
    assert caller.model_dump() == {
        "project_id": "project-a",
        "user_id": "alice",
        "roles": ("member", "admin"),
    }
    assert caller.is_admin
    assert jwt.decode(token, KEY, algorithms=["HS256"], issuer=LOCAL_ISSUER)["exp"] <= int(time.time()) + 60


@pytest.mark.parametrize(
    ("key", "project", "user", "ttl"),
    [("short", "p", "u", 60), (KEY, " ", "u", 60), (KEY, "p", "", 60), (KEY, "p", "u", 0)],
)
def test_minting_refuses_weak_keys_and_empty_identities(key: str, project: str, user: str, ttl: int) -> None:
    with pytest.raises(ValueError):
        mint_local_token(key, project, user, ["member"], ttl_seconds=ttl)


def test_cli_prints_a_token_for_the_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given the local stack's key file
    key_file = tmp_path / "token.key"
    key_file.write_text(tokens.new_local_key() + "\n")

    # When `python -m local.tokens` runs
    status = tokens.main(
        ["--key-file", str(key_file), "--project", "P", "--user", "U", "--roles", "member,admin"]
    )

    # Then it prints one token the verifier accepts for that project, user and roles
    printed = capsys.readouterr().out.strip()
    caller = LocalTokenVerifier(key_file.read_text().strip()).verify(printed)
    assert status == 0
    assert (caller.project_id, caller.user_id, caller.roles) == ("P", "U", ("member", "admin"))


def test_cli_without_a_key_file_fails_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given no key file (the local stack is not running)
    missing = tmp_path / "absent.key"

    # When the CLI runs
    status = tokens.main(["--key-file", str(missing), "--project", "P"])

    # Then it fails, says why on stderr, and prints no token
    output = capsys.readouterr()
    assert status == 2
    assert "make run" in output.err
    assert output.out == ""


def test_new_local_keys_are_long_and_distinct() -> None:
    keys = {tokens.new_local_key() for _ in range(5)}
    assert len(keys) == 5
    assert min(len(k) for k in keys) >= 32


def test_event_fixture_is_a_rest_request_authorizer_event() -> None:
    # Given the canonical event file, as `sam local invoke -e` would use it
    event = load_event(EVENT_NAME)

    # Then it has the REQUEST authorizer fields the handler relies on
    assert event["type"] == "REQUEST"
    assert event["methodArn"].startswith("arn:aws:execute-api:")
    assert "X-Auth-Token" in event["headers"]
    assert copy.deepcopy(event) == authorizer_event(event["headers"]["X-Auth-Token"])
