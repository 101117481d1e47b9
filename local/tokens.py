"""Mint local tokens: HS256 JWTs the authorizer accepts when AUTH_MODE=local (only `make run` sets it).

    python -m local.tokens --key-file local/.state/token.key --project P --user U --roles member,admin

The key is generated per run by the local stack (`new_local_key`) and never committed. The claims here
must match what `imagetasks.auth.local.LocalTokenVerifier` checks; a unit test mints and verifies.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jwt

LOCAL_ISSUER = "imagetasks-local"
LOCAL_ALGORITHM = "HS256"
MIN_KEY_LENGTH = 32
DEFAULT_KEY_FILE = Path("local/.state/token.key")
DEFAULT_TTL_SECONDS = 86400


def new_local_key() -> str:
    """A fresh random signing key (64 URL-safe characters)."""
    return secrets.token_urlsafe(48)


def mint_local_token(
    key: str, project_id: str, user_id: str, roles: list[str], ttl_seconds: int = DEFAULT_TTL_SECONDS
) -> str:
    """A token for `user_id` in `project_id` with `roles`, valid for `ttl_seconds`."""
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"the local token key must be at least {MIN_KEY_LENGTH} characters")
    if not project_id.strip() or not user_id.strip():
        raise ValueError("project_id and user_id must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    now = int(time.time())
    claims = {
        "iss": LOCAL_ISSUER,
        "sub": user_id,
        "project_id": project_id,
        "roles": [role.strip() for role in roles if role.strip()],
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, key, algorithm=LOCAL_ALGORITHM)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.tokens", description="Mint a token for the local stack."
    )
    parser.add_argument(
        "--key-file", type=Path, default=DEFAULT_KEY_FILE, help="the local stack's signing key"
    )
    parser.add_argument("--project", required=True, help="project id the token acts for")
    parser.add_argument("--user", help="user id (default: <project>-user)")
    parser.add_argument("--roles", default="member", help="comma separated roles, e.g. member,admin")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="lifetime in seconds")
    args = parser.parse_args(argv)
    try:
        key = args.key_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        print(
            f"cannot read the key file {args.key_file}: {error.strerror}; is `make run` running?",
            file=sys.stderr,
        )
        return 2
    roles = [role for role in args.roles.split(",") if role.strip()]
    try:
        token = mint_local_token(key, args.project, args.user or f"{args.project}-user", roles, args.ttl)
    except ValueError as error:
        print(str(error), file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
