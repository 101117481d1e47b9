"""Nothing the local stack runs may reach real AWS: a request moto does not answer is refused here.

Moto answers in-process AWS calls only while its mock is on. Work still running when the stack
stops (a state machine's execution thread, a handler invoked by it, a request the front is still
serving) would otherwise send its call to the real endpoint (dynamodb.<region>.amazonaws.com), or
at least try to resolve it. This botocore `before-send` handler refuses at once, while moto's mock is off,
any request not addressed to this machine (the local moto server is).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import EndpointConnectionError
from botocore.handlers import BUILTIN_HANDLERS

HANDLER_ID = "imagetasks-local-loopback-only"


def is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith((".localhost", ".invalid")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    # The containers' network reaches the host's moto server at a private address.
    return address.is_loopback or address.is_private


def refuse_remote(request: Any, **_: Any) -> None:
    """Refuse a request moto will not answer (its mock is off) unless it stays on this machine."""
    from moto.core.models import botocore_stubber

    url = str(getattr(request, "url", ""))
    if not botocore_stubber.enabled and not is_local(url):
        raise EndpointConnectionError(endpoint_url=f"{url} (refused: the local stack never reaches AWS)")


def install() -> None:
    """For every session made from now on, and the default one if it exists (idempotent). Run again
    after moto's mock stops: it puts back the default session it had set aside."""
    if ("before-send", refuse_remote) not in BUILTIN_HANDLERS:
        BUILTIN_HANDLERS.append(("before-send", refuse_remote))
    session = boto3.DEFAULT_SESSION
    if session is not None:
        session._session.register("before-send", refuse_remote, unique_id=HANDLER_ID)
