"""The OpenStackClient plugin module (entry point `openstack.cli.extension`: `imagetasks`).

OSC reads these names to add `--os-imagetasks-api-version` and to load the commands of the entry
point group `openstack.imagetasks.v2`. Its own `image` API name is taken (OSC skips a plugin that
reuses a base API's name), hence a name of our own; the commands still read `openstack image task ...`.
"""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib import utils

from .tasks import TasksClient
from .transport import SdkTransport

API_NAME = "imagetasks"
API_VERSION_OPTION = "os_imagetasks_api_version"
DEFAULT_API_VERSION = "2"
API_VERSIONS = ("2",)


def make_client(instance: Any) -> TasksClient:
    """`client_manager.imagetasks`: the tasks API through the image service's openstacksdk proxy,
    so the endpoint and auth are those `openstack image ...` uses."""
    return TasksClient(SdkTransport(instance.sdk_connection.image))


def build_option_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--os-imagetasks-api-version",
        metavar="<imagetasks-api-version>",
        default=utils.env("OS_IMAGETASKS_API_VERSION"),
        help=f"imagetasks API version, default={DEFAULT_API_VERSION} (Env: OS_IMAGETASKS_API_VERSION)",
    )
    return parser
