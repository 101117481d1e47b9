"""/var/runtime/bootstrap.py of the Lambda python3.13 stand-in image (see local/containers.sh).

It runs inside the container, under Debian's python3.13, before the handler is imported:

1. The function's own credentials. On Lambda each function runs with its execution role's credentials;
   `sam local` hands every container the same ones. When IMAGETASKS_CREDENTIALS_URL is set, this GETs
   `<url>/<AWS_LAMBDA_FUNCTION_NAME, URL-quoted>`, expects
   `{"AccessKeyId": ..., "SecretAccessKey": ..., "SessionToken": ...}` and replaces
   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN with them. Any failure ends the
   process with a message on stderr and a non-zero status: a function never runs with SAM's
   credentials by mistake (fail closed).
2. sys.path as Lambda's: the task root, the layers' /opt/python paths, /var/runtime (awslambdaric and
   boto3, standing in for the runtime's own site-packages), then the standard library; nothing from
   Debian's dist-packages.
3. awslambdaric's main loop with the handler SAM's RIE names.

Standard library only: nothing else is importable before sys.path is set.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

CREDENTIALS_URL = "IMAGETASKS_CREDENTIALS_URL"
CREDENTIAL_VARIABLES = {
    "AccessKeyId": "AWS_ACCESS_KEY_ID",
    "SecretAccessKey": "AWS_SECRET_ACCESS_KEY",
    "SessionToken": "AWS_SESSION_TOKEN",
}
TIMEOUT_SECONDS = 10.0


class CredentialsError(RuntimeError):
    """The function's credentials could not be fetched: the function must not start."""


def fetch_credentials(base_url: str, function_name: str) -> dict[str, str]:
    """The three environment variables for this function, from the credentials server."""
    if not function_name:
        raise CredentialsError("AWS_LAMBDA_FUNCTION_NAME is not set")
    url = f"{base_url.rstrip('/')}/{urllib.parse.quote(function_name, safe='')}"
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CredentialsError(f"{CREDENTIALS_URL} must be an http(s) URL, not {base_url!r}")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - scheme checked above
            body = response.read()
    except urllib.error.HTTPError as error:
        raise CredentialsError(f"{url} answered {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise CredentialsError(f"{url} could not be reached: {error}") from error
    try:
        document = json.loads(body)
    except ValueError as error:
        raise CredentialsError(f"{url} did not answer JSON") from error
    if not isinstance(document, dict):
        raise CredentialsError(f"{url} did not answer a JSON object")
    variables: dict[str, str] = {}
    for key, variable in CREDENTIAL_VARIABLES.items():
        value = document.get(key)
        if not isinstance(value, str) or not value:
            raise CredentialsError(f"{url} answered no {key}")
        variables[variable] = value
    return variables


def install_credentials(environ: dict[str, str] | os._Environ[str]) -> None:
    """Replace the AWS credentials in `environ` when a credentials URL is configured."""
    base_url = environ.get(CREDENTIALS_URL, "")
    if base_url:
        environ.update(fetch_credentials(base_url, environ.get("AWS_LAMBDA_FUNCTION_NAME", "")))


def lambda_sys_path(current: list[str]) -> list[str]:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    front = [
        os.environ.get("LAMBDA_TASK_ROOT", "/var/task"),
        f"/opt/python/lib/{version}/site-packages",
        "/opt/python",
        os.environ.get("LAMBDA_RUNTIME_DIR", "/var/runtime"),
    ]
    standard_library = [
        entry for entry in current if entry.startswith(sys.base_prefix) and "-packages" not in entry
    ]
    return front + [entry for entry in standard_library if entry not in front]


def main() -> None:
    try:
        install_credentials(os.environ)
    except CredentialsError as error:
        message = f"imagetasks bootstrap: no credentials for this function, not starting: {error}"
        print(message, file=sys.stderr)
        sys.exit(1)
    handler = os.environ.get("_HANDLER") or os.environ.get("AWS_LAMBDA_FUNCTION_HANDLER", "")
    if not handler:
        print("imagetasks bootstrap: no handler (_HANDLER) given", file=sys.stderr)
        sys.exit(1)
    sys.path[:] = lambda_sys_path(sys.path)
    from awslambdaric.__main__ import main as runtime_interface_client

    runtime_interface_client([sys.argv[0], handler])


if __name__ == "__main__":
    main()
