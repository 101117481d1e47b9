"""ImportAllowPrivate: a deployer's switch from the template to the import filter."""

from __future__ import annotations

import pytest

from imagetasks.composition import import_filter
from imagetasks.config import Settings
from imagetasks.domain.import_errors import ImportRejected


def resolver_to(address: str):
    return lambda host, port: [address]


@pytest.mark.parametrize(("allow", "expected"), [("true", True), ("false", False)])
def test_the_setting_reaches_the_filter(monkeypatch, allow, expected):
    monkeypatch.setenv("IMPORT_ALLOW_PRIVATE", allow)
    assert import_filter(Settings.from_environ()).settings.allow_private is expected


def test_private_addresses_are_fetched_only_when_allowed():
    from imagetasks.domain.import_filter import ImportFilter

    base = import_filter(Settings(import_allow_private=True)).settings
    allowed = ImportFilter(base, resolver=resolver_to("10.89.0.1"))
    assert allowed.check("http://mirror.invalid/disk.qcow2").addresses == ("10.89.0.1",)
    refused = ImportFilter(
        base.model_copy(update={"allow_private": False}), resolver=resolver_to("10.89.0.1")
    )
    with pytest.raises(ImportRejected):
        refused.check("http://mirror.invalid/disk.qcow2")
    # the metadata service stays refused whatever the switch says
    with pytest.raises(ImportRejected):
        ImportFilter(base, resolver=resolver_to("169.254.169.254")).check("http://mirror.invalid/x")
