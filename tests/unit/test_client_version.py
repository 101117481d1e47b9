"""The client is versioned with the service: its package version is the repository's VERSION."""

from __future__ import annotations

import tomllib
from importlib.metadata import version

from tests.support import ROOT


def test_the_client_package_has_the_services_version() -> None:
    service_version = (ROOT / "VERSION").read_text().strip()
    client_project = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]

    assert client_project["version"] == service_version
    assert version("imagetasks-client") == service_version  # the installed one, as pip built it
