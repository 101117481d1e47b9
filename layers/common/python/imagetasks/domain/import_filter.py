"""The import filter: which ``import_from`` locations the service may fetch (SSRF protection).

The filter decides on *resolved addresses*, not on host names: a friendly name can resolve to the
metadata service or to localhost. ``check`` returns the addresses it vetted and the HTTP adapter
connects to one of those, never resolving the name again, so DNS rebinding between the check and
the connection cannot redirect the fetch. Every redirect hop goes through ``check`` again.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Callable, Sequence
from typing import Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from imagetasks.domain.import_errors import InvalidImportLocation, TransientSourceError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Takes a host name and a port, returns the IP addresses (as text) it resolves to.
Resolver = Callable[[str, int], Sequence[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Carrier-grade NAT (RFC 6598). Python does not count it as private, yet it is as internal as 10/8.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
# NAT64 well-known prefix: the last 32 bits are an IPv4 address the gateway will reach for us.
_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
# The private ranges ``allow_private`` opens: RFC 1918 and IPv6 unique-local.
_ALLOWABLE_PRIVATE = tuple(
    ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)

FILTER_FAILED = "URI for legacy import task does not pass filtering: {uri}"
#: Glance's text, then which rule refused the location (Glance says nothing more).
FILTER_FAILED_BECAUSE = FILTER_FAILED + " ({reason})"
_ADDRESS_KINDS = {
    "unspecified": "the unspecified address 0.0.0.0 or ::",
    "loopback": "a loopback address",
    "link-local": "a link-local address, such as the cloud's metadata service's",
    "multicast": "a multicast address",
    "private": "a private-network address",
    "reserved": "a reserved or special-purpose address",
}
FILE_IMPORT_REFUSED = "File based imports are not allowed. Please use a non-local source of image data."
INVALID_SCHEME = (
    "The given uri is not valid. Please specify a valid uri "
    "from the following list of supported uri {supported}"
)
INVALID_HOST = (
    "The host name in {uri} is not a valid DNS name (each dot-separated label must be 1 to 63 "
    "letters, digits or hyphens once IDNA-encoded, 253 characters in all)"
)
INVALID_PORT = "The port in {uri} is not valid: give a number from 1 to 65535, or no port"
INVALID_URI = "The given uri is not a valid URL: {uri}"
INVALID_CHARACTER = (
    "The given uri holds a character a URL cannot have ({what} at position {position}); "
    "percent-encode it: {uri!r}"
)
INVALID_AUTHORITY = "The host and port in {uri} are not valid: give host or host:port, with one port"

# A host name label once IDNA-encoded: letters, digits, hyphens (and the underscore some real
# names carry), 1 to 63 of them. Anything else never reaches the resolver.
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_MAX_DNS_NAME = 253
_CANONICAL_PORT = re.compile(r"[1-9][0-9]{0,4}")


# Glance's file-based stores: `file:` and `filesystem:` name the service's own disk.
LOCAL_SCHEMES = ("file", "filesystem")


def is_local_location(url: str) -> bool:
    """Whether `url` names a file on the service's own machine: a `file:` or `filesystem:` URI, an
    absolute path, or a Windows drive letter (which urlsplit takes for a one-letter scheme)."""
    url = url.strip()
    scheme, colon, _ = url.partition(":")
    if colon and scheme.lower() in LOCAL_SCHEMES:
        return True
    return url.startswith(("/", "\\")) or (len(scheme) == 1 and scheme.isalpha() and bool(colon))


def default_resolver(host: str, port: int) -> list[str]:
    """Resolve with the system resolver; every address family, TCP only."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (UnicodeError, ValueError) as err:
        # The IDNA codec (label too long or empty, characters it refuses) or an embedded NUL.
        raise InvalidImportLocation(f"The image source host {host!r} is not a valid host name") from err
    except socket.gaierror as err:
        if err.errno == socket.EAI_AGAIN:
            raise TransientSourceError(
                f"The image source host {host} could not be resolved right now (DNS is not answering)"
            ) from err
        raise InvalidImportLocation(
            f"The image source host {host} does not exist (DNS lookup failed)"
        ) from err
    # sockaddr[0] is the address for both AF_INET and AF_INET6; drop an IPv6 zone id if any.
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


# The uploads layout: a project's objects live under its own prefix (see the README).
S3_PROJECT_PREFIX = "uploads/{project_id}/"


class ImportFilterSettings(BaseModel):
    """The deployment's import filter parameters. Host lists hold names (``.example.com`` also
    matches every sub-domain) or, in the deny list, address ranges in CIDR notation."""

    model_config = ConfigDict(frozen=True)

    allowed_schemes: tuple[str, ...] = ("http", "https")
    allowed_ports: tuple[int, ...] = (80, 443)
    host_allowlist: tuple[str, ...] = ()
    host_denylist: tuple[str, ...] = ()
    #: Only for tests and the local stack, whose fixture servers listen on 127.0.0.1.
    allow_loopback: bool = False
    #: RFC 1918, IPv6 unique-local and carrier-grade NAT ranges, for a cloud importing from its own LAN.
    allow_private: bool = False
    #: Buckets ``s3://`` imports may read; empty means ``s3://`` is not offered.
    allowed_s3_buckets: tuple[str, ...] = ()


class ResolvedTarget(BaseModel):
    """An HTTP(S) location that passed the filter, with the only addresses it may be fetched from."""

    model_config = ConfigDict(frozen=True)

    url: str
    scheme: Literal["http", "https"]
    host: str
    port: int
    path: str = Field(description="path and query, as sent in the request line")
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        """The Host header value: the name, with the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


class S3Location(BaseModel):
    """An ``s3://bucket/key`` import location that passed the bucket and project checks."""

    model_config = ConfigDict(frozen=True)

    url: str
    bucket: str
    key: str


def classify_address(address: IPAddress) -> str | None:
    """Name the non-public range ``address`` falls in, or ``None`` if it is an ordinary public one.

    IPv6 forms that embed an IPv4 address (mapped, 6to4, NAT64) are judged by the embedded address,
    so ``::ffff:127.0.0.1`` is loopback, not "some IPv6 address".
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return classify_address(embedded)
    # Order matters: 127/8 and 169.254/16 are also "private" for Python, and they must not be
    # let through by allow_private.
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE:
        return "private"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        # RFC 1918 and fc00::/7 are what a departmental cloud may allow; documentation, benchmarking
        # and similar special-purpose ranges Python also calls private are never legitimate sources.
        if any(address in net for net in _ALLOWABLE_PRIVATE):
            return "private"
        return "reserved"
    if not address.is_global:
        return "reserved"
    return None


class ImportFilter:
    """Vets ``import_from`` locations against the deployment's ``ImportFilterSettings``."""

    def __init__(
        self, settings: ImportFilterSettings | None = None, resolver: Resolver | None = None
    ) -> None:
        self._settings = settings or ImportFilterSettings()
        self._resolve = resolver or default_resolver

    @property
    def settings(self) -> ImportFilterSettings:
        return self._settings

    def supported_schemes(self) -> list[str]:
        schemes = [s.lower() for s in self._settings.allowed_schemes]
        if self._settings.allowed_s3_buckets and "s3" not in schemes:
            schemes.append("s3")
        return schemes

    def check_location(self, url: str | None, project_id: str | None = None) -> ResolvedTarget | S3Location:
        """Vet any ``import_from`` value: ``s3://`` goes to ``check_s3``, the rest to ``check``."""
        if url and url.strip().lower().startswith("s3://"):
            return self.check_s3(url, project_id)
        return self.check(url)

    def check(self, url: str | None) -> ResolvedTarget:
        """Vet an HTTP(S) URL and resolve it; raise ``InvalidImportLocation`` if it is refused.

        Also used for every redirect target, so it must stay cheap and side-effect free (apart
        from the DNS lookup).
        """
        parts, scheme = self._split(url)
        assert url is not None  # _split refuses empty locations
        if scheme not in ("http", "https") or scheme not in self.supported_schemes():
            raise InvalidImportLocation(INVALID_SCHEME.format(supported=self.supported_schemes()))
        if not _authority_well_formed(parts):
            raise InvalidImportLocation(INVALID_AUTHORITY.format(uri=url))
        port = _port(parts, scheme)
        if port is None:
            raise InvalidImportLocation(INVALID_PORT.format(uri=url))
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise _refused(url, "it names no host")
        if port not in self._settings.allowed_ports:
            allowed = ", ".join(str(p) for p in self._settings.allowed_ports)
            raise _refused(url, f"port {port} is not allowed; the allowed ports are {allowed}")
        literal = _ip_literal(host)
        if literal is None and not _valid_dns_name(host):
            raise InvalidImportLocation(INVALID_HOST.format(uri=url))
        host_refusal = self._host_refusal(host)
        if host_refusal is not None:
            raise _refused(url, host_refusal)
        addresses = [literal] if literal is not None else self._resolved(host, port)
        if not addresses:
            raise _refused(url, f"the host {host} resolves to no IP address")
        for address in addresses:
            address_refusal = self._address_refusal(address)
            if address_refusal is not None:
                named = "the address is" if literal is not None else f"the host {host} resolves to"
                raise _refused(url, f"{named} {address_refusal}")
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return ResolvedTarget(
            url=url,
            scheme=scheme,
            host=host,
            port=port,
            path=path,
            addresses=tuple(str(a) for a in addresses),
        )

    def check_s3(self, url: str | None, project_id: str | None = None) -> S3Location:
        """Vet ``s3://bucket/key``: an allowed bucket, and a key under ``uploads/<project_id>/``."""
        parts, scheme = self._split(url)
        assert url is not None
        if scheme != "s3" or "s3" not in self.supported_schemes():
            raise InvalidImportLocation(INVALID_SCHEME.format(supported=self.supported_schemes()))
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if bucket not in self._settings.allowed_s3_buckets:
            raise _refused(url, f"the bucket {bucket!r} is not this service's uploads bucket")
        if not key or key.endswith("/"):
            raise _refused(url, "it names no object (the key is empty or ends with /)")
        # A project reads only its own prefix: the service's role can read the whole bucket,
        # so this check is what keeps one project from importing another's objects.
        prefix = S3_PROJECT_PREFIX.format(project_id=project_id)
        if project_id is not None and not key.startswith(prefix):
            raise _refused(url, f"a project imports only its own uploads, under {prefix}")
        if any(segment in ("", ".", "..") for segment in key.split("/")):
            raise _refused(url, "the key holds an empty, '.' or '..' segment")
        return S3Location(url=url, bucket=bucket, key=key)

    def _split(self, url: str | None) -> tuple[SplitResult, str]:
        if url is None or not url.strip():
            raise InvalidImportLocation("Invalid location: None")
        url = url.strip()
        # Before urlsplit, which silently drops tabs and line breaks (a CR LF would otherwise pass).
        # An s3:// location names an object key, which may hold spaces and any printable character.
        _check_characters(url, key_like=url.lower().startswith("s3://"))
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise InvalidImportLocation(INVALID_URI.format(uri=url)) from None
        scheme = parts.scheme.lower()
        if is_local_location(url):
            raise InvalidImportLocation(FILE_IMPORT_REFUSED)
        if not scheme:  # a bare word (`swift`, `vsphere`): Glance calls it an invalid uri
            raise InvalidImportLocation(INVALID_SCHEME.format(supported=self.supported_schemes()))
        return parts, scheme

    def _resolved(self, host: str, port: int) -> list[IPAddress]:
        addresses: list[IPAddress] = []
        for text in self._resolve(host, port):
            try:
                addresses.append(ipaddress.ip_address(text))
            except ValueError:
                continue
        return addresses

    def _host_refusal(self, host: str) -> str | None:
        """Why the host's name is refused (the deny list, or not on the allow list), or None."""
        host = host.lower()
        names_denied = [e for e in self._settings.host_denylist if not _is_network(e)]
        if any(_name_matches(host, entry) for entry in names_denied):
            return f"the host {host} is on this cloud's deny list"
        allow = self._settings.host_allowlist
        if allow and not any(_name_matches(host, entry) for entry in allow):
            return f"the host {host} is not on this cloud's allow list"
        return None

    def _address_refusal(self, address: IPAddress) -> str | None:
        """Why an address is refused, said after "resolves to" (the address itself is not named:
        a refusal must not tell a caller what internal names resolve to), or None."""
        for entry in self._settings.host_denylist:
            if _is_network(entry) and _in_network(address, entry):
                return "an address in a range on this cloud's deny list"
        kind = classify_address(address)
        if kind is None:
            return None
        if kind == "loopback" and self._settings.allow_loopback:
            return None
        if kind == "private" and self._settings.allow_private:
            return None
        return f"{_ADDRESS_KINDS[kind]}, which this cloud does not import from"


def _refused(url: str, reason: str) -> InvalidImportLocation:
    return InvalidImportLocation(FILTER_FAILED_BECAUSE.format(uri=url, reason=reason))


_CHARACTER_NAMES = {
    "Cc": "a control character",
    "Cs": "a lone surrogate",
    "Zs": "a space",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Cf": "an invisible format character",
}


def _check_characters(url: str, *, key_like: bool = False) -> None:
    """Refuse what no URL may hold unencoded: control characters (CR, LF, NUL...), lone
    surrogates, spaces and invisible format characters (`key_like`, an S3 key: the first two only)."""
    for position, char in enumerate(url):
        category = unicodedata.category(char)
        if key_like and category not in ("Cc", "Cs"):
            continue
        what = _CHARACTER_NAMES.get(category)
        if what is not None:
            shown = url.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            raise InvalidImportLocation(INVALID_CHARACTER.format(what=what, position=position, uri=shown))


def _authority_well_formed(parts: SplitResult) -> bool:
    """One host and at most one port: ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``
    (``host:80:80`` is not a URL a client could agree on)."""
    netloc = parts.netloc.rpartition("@")[2]
    if netloc.startswith("["):
        tail = netloc.partition("]")[2]
        return tail.count(":") <= 1  # what follows the port's colon is _port's to judge
    return netloc.count(":") <= 1 and "[" not in netloc and "]" not in netloc


def _port(parts: SplitResult, scheme: str) -> int | None:
    """The URL's port, the scheme's default when it names none; ``None`` when the port is not a number
    from 1 to 65535 written canonically (``0``, ``00``, ``080``, ``+80``, an empty ``host:``)."""
    netloc = parts.netloc.rpartition("@")[2]
    if netloc.startswith("["):
        tail = netloc.partition("]")[2]
        if not tail:
            return _DEFAULT_PORTS[scheme]
        if not tail.startswith(":"):
            return None
        text = tail[1:]
    elif ":" in netloc:
        text = netloc.rpartition(":")[2]
    else:
        return _DEFAULT_PORTS[scheme]
    if not _CANONICAL_PORT.fullmatch(text) or int(text) > 65535:
        return None
    return int(text)


def _valid_dns_name(host: str) -> bool:
    """Whether ``host`` is a name the resolver can be asked about: IDNA-encodable, LDH labels."""
    try:
        encoded = host.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        return False
    if len(encoded) > _MAX_DNS_NAME:
        return False
    return all(_DNS_LABEL.fullmatch(label) for label in encoded.split("."))


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _name_matches(host: str, entry: str) -> bool:
    entry = entry.lower().rstrip(".")
    if entry.startswith("."):
        return host == entry[1:] or host.endswith(entry)
    return host == entry


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


def _in_network(address: IPAddress, entry: str) -> bool:
    network = ipaddress.ip_network(entry, strict=False)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version == network.version and address in network
