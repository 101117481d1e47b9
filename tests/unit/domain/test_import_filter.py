"""The import filter on its own: no DNS (a fake resolver), no network."""

from __future__ import annotations

import pytest

from imagetasks import composition
from imagetasks.config import Settings
from imagetasks.domain.import_errors import ImportRejected, InvalidImportLocation
from imagetasks.domain.import_filter import ImportFilter, ImportFilterSettings, default_resolver

DNS = {
    "images.example.invalid": ["93.184.216.34"],
    "dual.example.invalid": ["93.184.216.34", "2606:2800:220:1::1"],
    "localhost.example.invalid": ["127.0.0.1"],
    "lan.example.invalid": ["10.1.2.3"],
    "metadata.example.invalid": ["169.254.169.254"],
    "v6-loopback.example.invalid": ["::1"],
    "mapped.example.invalid": ["::ffff:127.0.0.1"],
    "mixed.example.invalid": ["93.184.216.34", "10.0.0.1"],
    "cgnat.example.invalid": ["100.64.0.1"],
    "multicast.example.invalid": ["224.0.0.251"],
    "sub.internal.example.invalid": ["93.184.216.40"],
}


class FakeResolver:
    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return DNS.get(host, [])


def make_filter(**settings: object) -> tuple[ImportFilter, FakeResolver]:
    resolver = FakeResolver()
    return ImportFilter(ImportFilterSettings(**settings), resolver=resolver), resolver


def refused_message(url: str) -> str:
    """Glance's text for a refused location; the rule that refused it follows in parentheses."""
    return f"URI for legacy import task does not pass filtering: {url} ("


def test_public_host_passes_with_its_vetted_addresses() -> None:
    # Given the default filter, When a public name is checked
    import_filter, _ = make_filter()
    target = import_filter.check("https://images.example.invalid/cirros.img?v=1")
    # Then the target carries what the HTTP adapter will connect to
    assert (target.scheme, target.host, target.port) == ("https", "images.example.invalid", 443)
    assert target.path == "/cirros.img?v=1"
    assert target.addresses == ("93.184.216.34",)
    assert target.host_header == "images.example.invalid"


def test_every_resolved_address_is_kept() -> None:
    import_filter, _ = make_filter()
    assert import_filter.check("http://dual.example.invalid/x").addresses == (
        "93.184.216.34",
        "2606:2800:220:1::1",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://127.1.2.3/x",
        "http://10.0.0.5/x",
        "http://172.16.3.4/x",
        "http://192.168.1.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://[fe80::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://[fd00::1]/x",
        "http://0.0.0.0/x",
        "http://100.64.1.1/x",
        "http://224.0.0.1/x",
        "http://240.0.0.1/x",
        "http://255.255.255.255/x",
        "http://localhost.example.invalid/x",
        "http://lan.example.invalid/x",
        "http://metadata.example.invalid/x",
        "http://v6-loopback.example.invalid/x",
        "http://mapped.example.invalid/x",
        "http://mixed.example.invalid/x",
        "http://cgnat.example.invalid/x",
        "http://multicast.example.invalid/x",
        "http://unknown.example.invalid/x",
    ],
)
def test_internal_addresses_are_refused_by_default(url: str) -> None:
    import_filter, _ = make_filter()
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check(url)
    assert refused.value.message.startswith(refused_message(url))


def test_allow_loopback_allows_loopback_only() -> None:
    import_filter, _ = make_filter(allow_loopback=True)
    assert import_filter.check("http://localhost.example.invalid/x").addresses == ("127.0.0.1",)
    assert import_filter.check("http://[::ffff:127.0.0.1]/x").addresses == ("::ffff:7f00:1",)
    for url in ("http://lan.example.invalid/x", "http://169.254.169.254/x", "http://[fe80::1]/x"):
        with pytest.raises(InvalidImportLocation):
            import_filter.check(url)


def test_allow_private_allows_private_ranges_but_never_link_local() -> None:
    import_filter, _ = make_filter(allow_private=True)
    assert import_filter.check("http://lan.example.invalid/x").addresses == ("10.1.2.3",)
    assert import_filter.check("http://cgnat.example.invalid/x").addresses == ("100.64.0.1",)
    for url in ("http://metadata.example.invalid/x", "http://127.0.0.1/x"):
        with pytest.raises(InvalidImportLocation):
            import_filter.check(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://images.example.invalid:8080/x",
        "https://images.example.invalid:22/x",
    ],
)
def test_ports_outside_the_list_are_refused(url: str) -> None:
    import_filter, resolver = make_filter()
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check(url)
    assert refused.value.message.startswith(refused_message(url))
    assert resolver.asked == []  # refused before any lookup


def test_allowed_port_and_host_header() -> None:
    import_filter, _ = make_filter(allowed_ports=(8080,))
    assert (
        import_filter.check("http://images.example.invalid:8080/x").host_header
        == "images.example.invalid:8080"
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://images.example.invalid/x",
        "gopher://x/",
        "s3://bucket/key",
        "swift",
        "vsphere",
        "images.invalid/x",
    ],
)
def test_schemes_outside_the_list_are_refused(url: str) -> None:
    import_filter, _ = make_filter()
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check_location(url)
    assert refused.value.message == (
        "The given uri is not valid. Please specify a valid uri from the following list of supported uri "
        "['http', 'https']"
    )


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "/etc/passwd", "FILE://host/x", "C:\\images\\x.img", "filesystem:///var/lib/x"],
)
def test_local_files_are_refused(url: str) -> None:
    import_filter, _ = make_filter()
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check(url)
    assert refused.value.message == (
        "File based imports are not allowed. Please use a non-local source of image data."
    )


@pytest.mark.parametrize("url", [None, "", "   "])
def test_empty_location(url: str | None) -> None:
    import_filter, _ = make_filter()
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check(url)
    assert refused.value.message == "Invalid location: None"


def test_denylist_names_subdomains_and_ranges() -> None:
    import_filter, _ = make_filter(
        host_denylist=(".internal.example.invalid", "dual.example.invalid", "93.184.216.0/24")
    )
    for url in (
        "http://sub.internal.example.invalid/x",
        "http://dual.example.invalid/x",
        "http://images.example.invalid/x",
    ):
        with pytest.raises(InvalidImportLocation):
            import_filter.check(url)


def test_allowlist_limits_hosts() -> None:
    import_filter, _ = make_filter(host_allowlist=("images.example.invalid",))
    assert import_filter.check("http://IMAGES.example.invalid./x").host == "images.example.invalid"
    with pytest.raises(InvalidImportLocation):
        import_filter.check("http://dual.example.invalid/x")


def test_allowlist_does_not_override_address_rules() -> None:
    import_filter, _ = make_filter(host_allowlist=("metadata.example.invalid",))
    with pytest.raises(InvalidImportLocation):
        import_filter.check("http://metadata.example.invalid/x")


def test_s3_locations_need_an_allowed_bucket_and_the_project_prefix() -> None:
    import_filter, _ = make_filter(allowed_s3_buckets=("uploads",))
    location = import_filter.check_location("s3://uploads/uploads/proj1/disk.qcow2", project_id="proj1")
    assert (location.url, getattr(location, "bucket", None)) == (
        "s3://uploads/uploads/proj1/disk.qcow2",
        "uploads",
    )
    for url in (
        "s3://other/uploads/proj1/disk.qcow2",
        "s3://uploads/uploads/proj2/disk.qcow2",
        "s3://uploads/uploads/proj1/../proj2/x",
    ):
        with pytest.raises(InvalidImportLocation) as refused:
            import_filter.check_location(url, project_id="proj1")
        assert refused.value.message.startswith(refused_message(url))


def test_s3_is_listed_as_supported_when_buckets_are_configured() -> None:
    import_filter, _ = make_filter(allowed_s3_buckets=("uploads",))
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check("ftp://x/y")
    assert refused.value.message.endswith("['http', 'https', 's3']")


# ------------------------------------------------------------------ hostile locations
@pytest.mark.parametrize(
    "host",
    [
        "a" * 64 + ".invalid",  # a label over 63 characters (the IDNA codec raises UnicodeError)
        "a..b",  # an empty label
        ".invalid",  # an empty first label
        "\udcff\u2028junk.invalid",  # a lone surrogate and a line separator
        "ex\x00ample.invalid",  # NUL: getaddrinfo would raise ValueError
        "under score.invalid",
        "a%2eb.invalid",
        ".".join(["abcdefghij"] * 24) + ".invalid",  # 272 characters in all
    ],
)
def test_host_names_that_are_not_dns_names_are_refused_before_any_lookup(host: str) -> None:
    import_filter, resolver = make_filter()
    url = f"http://{host}/x"
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check(url)
    message = refused.value.message
    # (a character no URL may hold is refused as such, before the host is even looked at)
    assert (
        message.startswith(f"The host name in {url} is not a valid DNS name")
        or ("percent-encode it" in message and not host.isprintable())
        or ("(a space at position" in message and " " in host)
    )
    assert resolver.asked == []


def test_international_names_are_still_looked_up() -> None:
    import_filter, resolver = make_filter()
    # (the fake resolver knows no such name: refused after the lookup, as an unknown name is)
    with pytest.raises(InvalidImportLocation):
        import_filter.check("http://bücher.invalid/x")
    assert resolver.asked == [("bücher.invalid", 80)]


@pytest.mark.parametrize("host", ["a..b", "a" * 64 + ".invalid", "\udcffjunk.invalid"])
def test_the_default_resolver_turns_codec_errors_into_a_refusal(host: str) -> None:
    with pytest.raises(InvalidImportLocation) as refused:
        default_resolver(host, 80)
    assert refused.value.message == f"The image source host {host!r} is not a valid host name"


@pytest.mark.parametrize(
    "url",
    [
        "http://images.example.invalid:0/x",
        "http://images.example.invalid:00/x",
        "http://images.example.invalid:080/x",
        "http://images.example.invalid:+80/x",
        "http://images.example.invalid:/x",
        "http://images.example.invalid:65536/x",
        "http://images.example.invalid:99999/x",
        "http://[2001:db8::1]:0/x",
        "http://[2001:db8::1]x/x",
    ],
)
def test_ports_not_written_as_1_to_65535_are_refused_even_if_listed(url: str) -> None:
    # Given a filter whose allowed ports even list 0 (port 0 used to pass and be fetched as 80)
    import_filter, resolver = make_filter(allowed_ports=(0, 80))
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check(url)
    assert refused.value.message == (
        f"The port in {url} is not valid: give a number from 1 to 65535, or no port"
    )
    assert resolver.asked == []


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/x",
        "http://[not-an-address]/x",
        "http://images.example.invalid]:80/x",
        "http://images[.example.invalid/x",
    ],
)
def test_urls_python_cannot_split_are_refused(url: str) -> None:
    import_filter, _ = make_filter()
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check_location(url)
    assert refused.value.message == f"The given uri is not a valid URL: {url}"


@pytest.mark.parametrize(
    "url",
    [
        "http://images.example.invalid:80:80/x",
        "http://images.example.invalid:80:/x",
        "http://images.example.invalid::80/x",
        "http://user@images.example.invalid:80:443/x",
        "http://[2001:db8::1]:80:80/x",
    ],
)
def test_an_authority_with_more_than_one_port_is_refused_before_any_lookup(url: str) -> None:
    import_filter, resolver = make_filter()
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check(url)
    assert refused.value.message == (
        f"The host and port in {url} are not valid: give host or host:port, with one port"
    )
    assert resolver.asked == []


@pytest.mark.parametrize(
    ("url", "what", "position"),
    [
        ("http://images.example.invalid/a\r\nHost: evil.invalid", "a control character", 31),
        ("http://images.example.invalid/a\nb", "a control character", 31),
        ("http://images.example.invalid/a\tb", "a control character", 31),
        ("http://images.example.invalid/a\x00b", "a control character", 31),
        ("http://images.example.invalid/a\x7fb", "a control character", 31),
        ("http://images.\ud800example.invalid/", "a lone surrogate", 14),
        ("http://images.example.invalid/a b", "a space", 31),
        ("http://images.example.invalid/a\u2028b", "a line separator", 31),
        ("http://images.example.invalid/a\u200bb", "an invisible format character", 31),
        ("http://images.example.invalid:80\r\n/x", "a control character", 32),
    ],
)
def test_characters_no_url_may_hold_are_refused_naming_them(url: str, what: str, position: int) -> None:
    import_filter, resolver = make_filter()
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check_location(url)
    assert f"({what} at position {position}); percent-encode it" in refused.value.message
    assert resolver.asked == []
    refused.value.message.encode("utf-8")  # the message itself is valid text (no lone surrogate)


@pytest.mark.parametrize(
    "url",
    [
        "http://images.example.invalid:80/x",
        "http://images.example.invalid/a%0D%0Ab",
        "http://[2001:db8::1]:80/x",
        "http://user:secret@images.example.invalid:80/x",
    ],
)
def test_well_formed_neighbours_still_pass_the_parsing(url: str) -> None:
    import_filter, _ = make_filter(allow_private=True)
    try:
        import_filter.check(url)
    except InvalidImportLocation as refused:  # refused for its address, never for its form
        assert refused.message.startswith(refused_message(url))


@pytest.mark.parametrize(
    ("key", "refused"),
    [
        ("uploads/p/my disk.qcow2", False),
        ("uploads/p/disk\u200b.qcow2", False),
        ("uploads/p/disk\r\n.qcow2", True),
        ("uploads/p/disk\x00.qcow2", True),
        ("uploads/p/\udc80.qcow2", True),
    ],
)
def test_an_s3_key_may_hold_spaces_but_no_control_character_or_lone_surrogate(
    key: str, refused: bool
) -> None:
    import_filter, _ = make_filter(allowed_s3_buckets=("uploads-bucket",))
    url = f"s3://uploads-bucket/{key}"
    if refused:
        with pytest.raises(InvalidImportLocation, match="percent-encode it"):
            import_filter.check_location(url, "p")
    else:
        assert import_filter.check_location(url, "p").key == key


@pytest.mark.parametrize(
    ("settings", "url", "reason"),
    [
        (
            {},
            "http://images.example.invalid:8080/x",
            "port 8080 is not allowed; the allowed ports are 80, 443",
        ),
        ({}, "http://localhost.example.invalid/x", "resolves to a loopback address, which this cloud"),
        ({}, "http://169.254.169.254/x", "the address is a link-local address, such as the cloud's metadata"),
        (
            {},
            "http://lan.example.invalid/x",
            "the host lan.example.invalid resolves to a private-network address",
        ),
        (
            {},
            "http://unknown.example.invalid/x",
            "the host unknown.example.invalid resolves to no IP address",
        ),
        ({}, "http://240.0.0.1/x", "a reserved or special-purpose address"),
        (
            {"host_denylist": (".internal.example.invalid",)},
            "http://sub.internal.example.invalid/x",
            "the host sub.internal.example.invalid is on this cloud's deny list",
        ),
        (
            {"host_denylist": ("93.184.216.0/24",)},
            "http://images.example.invalid/x",
            "resolves to an address in a range on this cloud's deny list",
        ),
        (
            {"host_allowlist": ("mirror.example.invalid",)},
            "http://images.example.invalid/x",
            "the host images.example.invalid is not on this cloud's allow list",
        ),
        (
            {"allowed_s3_buckets": ("uploads",)},
            "s3://other/uploads/proj1/disk.qcow2",
            "the bucket 'other' is not this service's uploads bucket",
        ),
        (
            {"allowed_s3_buckets": ("uploads",)},
            "s3://uploads/uploads/proj2/disk.qcow2",
            "a project imports only its own uploads, under uploads/proj1/",
        ),
        (
            {"allowed_s3_buckets": ("uploads",)},
            "s3://uploads/uploads/proj1/../proj2/x",
            "the key holds an empty, '.' or '..' segment",
        ),
        ({"allowed_s3_buckets": ("uploads",)}, "s3://uploads/uploads/proj1/", "it names no object"),
    ],
)
def test_a_refusal_keeps_glances_text_and_says_which_rule_refused(
    settings: dict[str, object], url: str, reason: str
) -> None:
    # Given a filter with the deployment's settings
    import_filter, _ = make_filter(**settings)
    # When a location one rule refuses is checked
    with pytest.raises(InvalidImportLocation) as refused:
        import_filter.check_location(url, project_id="proj1")
    # Then Glance's text comes first, the rule after it, and no resolved address is named
    message = refused.value.message
    assert message.startswith(refused_message(url)) and message.endswith(")")
    assert reason in message
    assert "127.0.0.1" not in message and "10.1.2.3" not in message and "93.184.216.34" not in message


# ------------------------------------------------------------------ ImportAllowPrivate: a deployer's
# switch from the template to the import filter
def resolver_to(address: str):
    return lambda host, port: [address]


@pytest.mark.parametrize(("allow", "expected"), [("true", True), ("false", False)])
def test_the_setting_reaches_the_filter(monkeypatch, allow, expected):
    monkeypatch.setenv("IMPORT_ALLOW_PRIVATE", allow)
    assert composition.import_filter(Settings.from_environ()).settings.allow_private is expected


def test_private_addresses_are_fetched_only_when_allowed():
    base = composition.import_filter(Settings(import_allow_private=True)).settings
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
