"""The `Transport` of the OpenStackClient: the image service's openstacksdk proxy.

The proxy is what `openstack image ...` itself uses: it carries the user's auth (a keystone token
and the catalog's `image` endpoint, or `--os-auth-type admin_token --os-endpoint <api>/v2`), and its
paths are relative to the versioned endpoint (`/tasks` is `<endpoint>/v2/tasks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keystoneauth1 import exceptions as ksa_exceptions

from .tasks import Reply, ServiceUnavailable

#: A long poll holds the answer for up to 20 s; the read timeout leaves room for the network.
LONG_POLL_TIMEOUT_SECONDS = 45


class SdkTransport:
    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy  # an openstack.image.v2._proxy.Proxy (a keystoneauth Adapter)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Reply:
        options: dict[str, Any] = {"raise_exc": False}
        if params:
            options["params"] = dict(params)
            if "wait" in params:
                options["timeout"] = LONG_POLL_TIMEOUT_SECONDS
        if json is not None:
            options["json"] = json
        if method == "GET":
            options["skip_cache"] = True  # a long poll's answer is never the last one's
        try:
            response = self.proxy.request(path, method, **options)
        except ksa_exceptions.ConnectionError as error:  # refused, reset, timed out: worth a retry
            raise ServiceUnavailable(0, f"Could not reach the image service: {error}") from error
        try:
            body = response.json()
        except ValueError:
            body = None
        return Reply(status=response.status_code, body=body, text=response.text)
