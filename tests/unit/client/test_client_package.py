"""The installed client: versioned with the service, and advertised to OpenStackClient by entry points."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points, version

from imagetasks_client import commands, plugin

from tests.support import ROOT


def test_the_client_package_has_the_services_version() -> None:
    service_version = (ROOT / "VERSION").read_text().strip()
    client_project = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]

    assert client_project["version"] == service_version
    assert version("imagetasks-client") == service_version  # the installed one, as pip built it


def test_osc_finds_the_plugin_module_and_its_commands_under_its_api_name() -> None:
    (extension,) = [ep for ep in entry_points(group="openstack.cli.extension") if ep.name == plugin.API_NAME]
    group = f"openstack.{plugin.API_NAME}.v{plugin.DEFAULT_API_VERSION}"
    registered = {ep.name: ep.load() for ep in entry_points(group=group)}

    assert extension.load() is plugin
    # OSC skips an extension that reuses a base API's name, so the plugin cannot call itself `image`
    assert plugin.API_NAME != "image" and plugin.DEFAULT_API_VERSION in plugin.API_VERSIONS
    assert registered == {
        "image_task_show": commands.ShowTask,
        "image_task_list": commands.ListTask,
        "image_task_watch": commands.WatchTask,
        "image_task_cancel": commands.CancelTask,
        "image_task_create": commands.CreateTask,
    }
