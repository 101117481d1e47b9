"""Open an image source as a stream of chunks: HTTP(S) through the import filter, or S3.

HTTP: every hop (the first URL and each redirect) is vetted by ``ImportFilter.check`` and the
connection goes to an address that check returned, never to a fresh DNS answer, so a name that
re-resolves to 169.254.169.254 between check and connect cannot redirect the fetch. The Host
header, TLS SNI and certificate check still use the host name.
"""

from __future__ import annotations

import contextlib
import http
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import urllib3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from imagetasks.adapters.staging import TRANSIENT_S3_CODES
from imagetasks.domain.import_errors import SourceChanged, SourceUnavailable, TransientSourceError
from imagetasks.domain.import_filter import ImportFilter, ResolvedTarget
from imagetasks.domain.transfer_rate import TransferRateGuard

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Largest single socket read: reads return what has arrived (read1), so that the transfer rate is
# seen as the data comes; they are joined into `chunk_size` chunks for the hashing and the checks.
_MAX_READ = 1 * MiB
HTTP_TOO_SLOW_ADVICE = "use a faster source, or upload the image to this cloud's uploads bucket instead."
S3_TOO_SLOW_ADVICE = "please try again later."


def rate_guard(settings: HttpSourceSettings, advice: str) -> TransferRateGuard:
    return TransferRateGuard(settings.min_bytes_per_second, settings.rate_window_seconds, advice=advice)


class HttpSourceSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    connect_timeout_seconds: float = 10.0
    #: Longest silence between two reads of the body before the source counts as timed out.
    read_timeout_seconds: float = 60.0
    #: The slowest a source may send, measured over every window of ``rate_window_seconds``
    #: (0: no minimum). A source that sends nothing at all meets the read timeout instead.
    min_bytes_per_second: float = Field(default=0, ge=0)
    rate_window_seconds: float = Field(default=30.0, gt=0)
    max_redirects: int = 5
    #: Size of the chunks handed on; large chunks keep per-chunk overhead (inspection, thread
    #: hand-offs) negligible next to hashing.
    chunk_size: int = 8 * MiB
    #: What arrived is handed on at least this often, even short of ``chunk_size``: a slow source
    #: (or one without a known length) still moves the task's progress, which is also how its step
    #: learns, every few seconds, that its task was cancelled.
    flush_seconds: float = Field(default=1.0, gt=0)
    user_agent: str = "imagetasks-import/1"


class SourceStream:
    """An opened image source: iterate for the chunks, ``close`` when done (or use ``with``)."""

    def __init__(
        self,
        url: str,
        content_length: int | None,
        chunks: Iterator[bytes],
        closer: Any,
        etag: str | None = None,
    ) -> None:
        self.url = url
        self.content_length = content_length
        #: An S3 source's ETag (without quotes): which object was read, should the key change later.
        self.etag = etag
        self._chunks = chunks
        self._closer = closer

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def abort(self) -> None:
        """Cut the source's connection now, from any thread: a read blocked on it (a source that
        sends nothing, or trickles) returns at once instead of at the read timeout."""
        response = getattr(self._closer, "_raw_stream", self._closer)  # botocore wraps urllib3's
        # urllib3 2 hands the socket to http.client's response once the headers are read: it is
        # the one under that response's buffered reader (the connection's own is None by then).
        reader = getattr(getattr(response, "_fp", None), "fp", None)
        _shut(getattr(getattr(reader, "raw", None), "_sock", None))
        _shut(getattr(getattr(response, "connection", None), "sock", None))

    def close(self) -> None:
        close = getattr(self._closer, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> SourceStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shut(sock: object) -> None:
    """Shut a socket down for both directions (what wakes a thread blocked reading it)."""
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


class HttpSource:
    """Opens ``http(s)://`` image sources through the import filter. ``abort`` (from any thread)
    cuts whatever it has open: a connection still waiting for the answer's headers, or the body."""

    def __init__(
        self,
        import_filter: ImportFilter,
        settings: HttpSourceSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._filter = import_filter
        self._settings = settings or HttpSourceSettings()
        self._ssl_context = ssl_context
        self._clock = clock
        self._open_connections: list[Any] = []
        self._streams: list[SourceStream] = []
        self._aborted = False

    def abort(self) -> None:
        self._aborted = True
        for connection in list(self._open_connections):
            _shut(getattr(connection, "sock", None))
        for stream in list(self._streams):
            stream.abort()

    def open(self, url: str | ResolvedTarget) -> SourceStream:
        """Connect, follow vetted redirects, and return the body as a stream of chunks.

        ``url`` may be a target ``ImportFilter.check`` already vetted: it is then used as is, so
        the name is resolved once per hop (a second lookup could answer differently).

        Raises ``InvalidImportLocation`` (a hop refused by the filter, before connecting),
        ``SourceUnavailable`` (4xx, too many redirects) or ``TransientSourceError`` (5xx, 429,
        timeouts, refused connections).
        """
        vetted = url if isinstance(url, ResolvedTarget) else None
        current = first = url.url if isinstance(url, ResolvedTarget) else url
        for _hop in range(self._settings.max_redirects + 1):
            target = vetted or self._filter.check(current)
            vetted = None
            response = self._request(target)
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                response.release_conn()
                if not location:
                    raise SourceUnavailable(
                        f"The image source answered {response.status} without a Location: {current}"
                    )
                try:
                    current = urljoin(current, location)
                except ValueError:  # e.g. an unclosed IPv6 bracket: not a URL at all
                    raise SourceUnavailable(
                        f"The image source redirected to an invalid location {location!r}: {current}"
                    ) from None
                continue
            if response.status != 200:
                response.release_conn()
                message = f"The image source answered {_status_text(response.status)}: {current}"
                if response.status >= 500 or response.status in (408, 429):
                    raise TransientSourceError(message)
                raise SourceUnavailable(message)
            length = _content_length(response)
            stream = SourceStream(current, length, self._chunks(response, current, length), response)
            self._streams.append(stream)
            if self._aborted:  # cut while the answer arrived: the stream's socket was not known yet
                stream.abort()
            return stream
        raise SourceUnavailable(
            f"The image source redirected more than {self._settings.max_redirects} times: {first}"
        )

    def _request(self, target: ResolvedTarget) -> urllib3.BaseHTTPResponse:
        timeout = urllib3.Timeout(
            connect=self._settings.connect_timeout_seconds, read=self._settings.read_timeout_seconds
        )
        headers = {
            "Host": target.host_header,
            "User-Agent": self._settings.user_agent,
            # The bytes hashed must be the bytes served: no transparent decompression.
            "Accept-Encoding": "identity",
        }
        last_error: Exception | None = None
        for address in target.addresses:
            pool = self._pool(target, address, timeout)
            try:
                return pool.urlopen(
                    "GET",
                    target.path,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    decode_content=False,
                    assert_same_host=False,
                )
            except (NewConnectionError, ConnectTimeoutError) as err:
                last_error = err  # try the next vetted address, as a browser would
            except ReadTimeoutError as err:
                raise TransientSourceError(
                    f"The image source did not answer within {self._settings.read_timeout_seconds:g} s: "
                    f"{target.url}"
                ) from err
            except HTTPError as err:
                raise TransientSourceError(
                    f"The image source could not be reached ({err}): {target.url}"
                ) from err
        if isinstance(last_error, ConnectTimeoutError):
            raise TransientSourceError(
                f"The image source did not accept a connection within "
                f"{self._settings.connect_timeout_seconds:g} s: {target.url}"
            ) from last_error
        raise TransientSourceError(f"The image source refused the connection: {target.url}") from last_error

    def _pool(
        self, target: ResolvedTarget, address: str, timeout: urllib3.Timeout
    ) -> urllib3.HTTPConnectionPool:
        if target.scheme == "https":
            return self._tracked(
                urllib3.HTTPSConnectionPool(
                    address,
                    target.port,
                    timeout=timeout,
                    maxsize=1,
                    retries=False,
                    # Connect to the vetted address, but speak TLS to (and verify) the host name.
                    server_hostname=target.host,
                    assert_hostname=target.host,
                    cert_reqs="CERT_REQUIRED",
                    ssl_context=self._ssl_context,
                )
            )
        return self._tracked(
            urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, maxsize=1, retries=False)
        )

    def _tracked(self, pool: urllib3.HTTPConnectionPool) -> urllib3.HTTPConnectionPool:
        """The pool, its new connections kept for `abort` (their sockets, while they wait for the
        answer's headers)."""
        new_conn = pool._new_conn

        def tracked() -> Any:
            connection = new_conn()
            self._open_connections.append(connection)
            return connection

        pool._new_conn = tracked  # type: ignore[method-assign]
        return pool

    def _chunks(self, response: urllib3.BaseHTTPResponse, url: str, length: int | None) -> Iterator[bytes]:
        received = 0
        of = f" of {length}" if length is not None else ""
        chunk_size = self._settings.chunk_size
        guard = rate_guard(self._settings, HTTP_TOO_SLOW_ADVICE)
        pending: list[bytes] = []
        pending_size = 0
        handed_on = self._clock()
        try:
            while True:
                try:
                    piece = response.read1(min(chunk_size - pending_size, _MAX_READ))
                except ReadTimeoutError as err:
                    raise TransientSourceError(
                        f"The image source stopped sending for {self._settings.read_timeout_seconds:g} s "
                        f"after {received} bytes{of}: {url}"
                    ) from err
                except (ProtocolError, HTTPError) as err:
                    raise TransientSourceError(
                        f"The image source broke off after {received} bytes{of}: {url}"
                    ) from err
                if not piece:
                    break
                received += len(piece)
                guard.received(len(piece))
                pending.append(piece)
                pending_size += len(piece)
                now = self._clock()
                if pending_size >= chunk_size or now - handed_on >= self._settings.flush_seconds:
                    yield pending[0] if len(pending) == 1 else b"".join(pending)
                    pending, pending_size = [], 0
                    handed_on = now
            if pending:
                yield b"".join(pending)
            if length is not None and received != length:
                raise TransientSourceError(f"The image source broke off after {received} bytes{of}: {url}")
        finally:
            response.release_conn()


class S3Source:
    """Opens ``s3://bucket/key`` sources (already vetted by ``ImportFilter.check_s3``)."""

    def __init__(
        self,
        client: S3Client | None = None,
        chunk_size: int = 8 * MiB,
        settings: HttpSourceSettings | None = None,
    ) -> None:
        self._client = client
        self._chunk_size = chunk_size
        self._settings = settings or HttpSourceSettings()

    def open(
        self, bucket: str, key: str, *, etag: str | None = None, version_id: str | None = None
    ) -> SourceStream:
        """Open the object; with `etag` (and `version_id`), only that very object: a key uploaded
        again since is refused with SourceChanged rather than read."""
        url = f"s3://{bucket}/{key}"
        request: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if etag:
            request["IfMatch"] = f'"{etag}"'
        if version_id:
            request["VersionId"] = version_id
        try:
            response = self._s3().get_object(**request)
        except (ClientError, BotoCoreError) as err:
            raise translate_source_error(err, url) from err
        body = response["Body"]
        return SourceStream(
            url,
            int(response["ContentLength"]),
            self._chunks(body, url),
            body,
            etag=str(response.get("ETag", "")).strip('"') or None,
        )

    def _chunks(self, body: Any, url: str) -> Iterator[bytes]:
        # Counted per chunk: S3 is far faster than any minimum; this catches a transfer that
        # crawls (a stall is botocore's read timeout).
        guard = rate_guard(self._settings, S3_TOO_SLOW_ADVICE)
        try:
            for chunk in body.iter_chunks(self._chunk_size):
                guard.received(len(chunk))
                yield chunk
        except (ClientError, BotoCoreError, urllib3.exceptions.HTTPError) as err:
            raise translate_source_error(err, url) from err
        finally:
            body.close()

    def _s3(self) -> S3Client:
        if self._client is None:
            import boto3  # built lazily: nothing talks to AWS at import time

            self._client = boto3.client("s3")
        return self._client


def translate_source_error(error: Exception, url: str) -> Exception:
    """The one place S3 errors on the *source* side become import errors."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", "Unknown"))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in TRANSIENT_S3_CODES or status >= 500:
            return TransientSourceError(f"Reading the image source failed temporarily ({code}): {url}")
        if code in ("PreconditionFailed", "412"):
            # Only an upload is read with If-Match: its key was uploaded again after its task began.
            return SourceChanged(
                f"The upload {url} was replaced by a new upload while this task was importing it, "
                "so this task stopped (the new upload is imported by a task of its own). To import "
                "the image this task was for, upload it again."
            )
        if code in ("NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404"):
            return SourceUnavailable(f"The image source does not exist: {url}")
        if code in ("AccessDenied", "403"):
            return SourceUnavailable(
                f"The image source cannot be read by this service (access denied): {url}"
            )
        return SourceUnavailable(f"The image source could not be read ({code}): {url}")
    return TransientSourceError(
        f"Reading the image source failed temporarily ({type(error).__name__}): {url}"
    )


def _content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or response.headers.get("Transfer-Encoding"):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _status_text(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
