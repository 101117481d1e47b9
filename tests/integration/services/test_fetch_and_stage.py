"""fetch_and_check end to end at the adapter boundary: a real local HTTP server, S3 on moto."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
import urllib3.util.connection
from botocore.exceptions import ClientError
from moto import mock_aws

from imagetasks.adapters.http_source import HttpSourceSettings
from imagetasks.adapters.staging import translate_client_error
from imagetasks.domain.errors import TaskNotProcessing
from imagetasks.domain.image_checks import EMPTY_IMAGE, ExpectedChecksums, ImageCheckSettings
from imagetasks.domain.import_errors import (
    ImageRejected,
    InvalidImportLocation,
    SourceTooSlow,
    SourceUnavailable,
    StagingError,
    TransientSourceError,
    TransientStorageError,
)
from imagetasks.domain.import_filter import ImportFilterSettings
from imagetasks.domain.progress import ProgressReporter
from imagetasks.domain.runners import NeedsContainer, RunnerLimits
from imagetasks.services.fetch_and_stage import FetchResult, ImportSettings, SourceWatch, fetch_and_check
from tests.image_corpus import (
    file_digests,
    make_empty,
    make_qcow2,
    make_qcow2_backing_file,
    make_raw,
    require_qemu_img,
)

STAGING = "staging-bucket"
Route = Callable[[BaseHTTPRequestHandler], None]


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 that records every connection and Host header."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.connections = 0
        self.hosts: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hosts.append(self.headers.get("Host", ""))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route(self)

            def log_message(self, *args: object) -> None:
                pass

        class Recording(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: object, client_address: object) -> bool:
                server.connections += 1
                return True

        self.httpd = Recording(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def serve_file(self, path: str, file: Path) -> str:
        def route(handler: BaseHTTPRequestHandler) -> None:
            data = file.read_bytes()
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        self.routes[path] = route
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        self.routes[path] = route
        return self.url(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=STAGING)
        client.create_bucket(Bucket="uploads")
        yield client


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address urllib3 opens a TCP connection to."""
    opened: list[tuple[str, int]] = []
    real = urllib3.util.connection.create_connection

    def recording(address: tuple[str, int], *args: object, **kwargs: object) -> object:
        opened.append(address)
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(urllib3.util.connection, "create_connection", recording)
    return opened


def settings_for(server: LocalServer, **checks: object) -> ImportSettings:
    return ImportSettings(
        filter=ImportFilterSettings(
            allow_loopback=True, allowed_ports=(server.port, 80, 443), allowed_s3_buckets=("uploads",)
        ),
        checks=ImageCheckSettings(**checks),
        http=HttpSourceSettings(connect_timeout_seconds=2, read_timeout_seconds=0.5),
    )


def fetch(url: str, server: LocalServer, s3: object, disk_format: str = "raw", **kw: object) -> FetchResult:
    return fetch_and_check(
        url,
        disk_format,
        "bare",
        kw.pop("expected", None),  # type: ignore[arg-type]
        STAGING,
        "staging/task-1",
        settings=kw.pop("settings", None) or settings_for(server),  # type: ignore[arg-type]
        s3_client=s3,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def staged_keys(s3: object) -> list[str]:
    listing = s3.list_objects_v2(Bucket=STAGING)  # type: ignore[attr-defined]
    uploads = s3.list_multipart_uploads(Bucket=STAGING).get("Uploads", [])  # type: ignore[attr-defined]
    return [o["Key"] for o in listing.get("Contents", [])] + [f"upload:{u['Key']}" for u in uploads]


@pytest.mark.parametrize(("make", "disk_format"), [(make_qcow2, "qcow2"), (make_raw, "raw")])
def test_image_is_staged_with_the_right_hashes(
    make: Callable[[Path], Path], disk_format: str, server: LocalServer, s3: object, tmp_path: Path
) -> None:
    require_qemu_img()
    # Given an image served over HTTP
    image = make(tmp_path)
    url = server.serve_file("/image", image)
    # When it is fetched and checked
    result = fetch(url, server, s3, disk_format)
    # Then the staged object is the file, and the hashes are hashlib's
    md5, sha512 = file_digests(image)
    assert (result.checksum, result.os_hash_value, result.size) == (md5, sha512, image.stat().st_size)
    assert result.detected_format == disk_format and result.virtual_size == 1024 * 1024
    body = s3.get_object(Bucket=STAGING, Key="staging/task-1")["Body"].read()  # type: ignore[attr-defined]
    assert body == image.read_bytes()
    assert server.hosts == [f"127.0.0.1:{server.port}"]


def test_refused_image_leaves_nothing_staged(server: LocalServer, s3: object, tmp_path: Path) -> None:
    require_qemu_img()
    url = server.serve_file("/bad", make_qcow2_backing_file(tmp_path))
    with pytest.raises(ImageRejected, match="it has a backing file"):
        fetch(url, server, s3, "qcow2")
    assert staged_keys(s3) == []


def test_wrong_expected_checksum_leaves_nothing_staged(
    server: LocalServer, s3: object, tmp_path: Path
) -> None:
    url = server.serve_file("/raw", make_raw(tmp_path))
    with pytest.raises(ImageRejected, match="expected checksum"):
        fetch(url, server, s3, expected=ExpectedChecksums(checksum="0" * 32))
    assert staged_keys(s3) == []


def test_404(server: LocalServer, s3: object) -> None:
    url = server.url("/missing")
    with pytest.raises(SourceUnavailable) as failed:
        fetch(url, server, s3)
    assert failed.value.message == f"The image source answered 404 Not Found: {url}"


def test_5xx_is_transient(server: LocalServer, s3: object) -> None:
    server.routes["/busy"] = lambda h: h.send_error(503)
    with pytest.raises(TransientSourceError, match="503 Service Unavailable"):
        fetch(server.url("/busy"), server, s3)


def test_vetted_redirects_are_followed(server: LocalServer, s3: object, tmp_path: Path) -> None:
    image = make_raw(tmp_path)
    server.serve_file("/final", image)
    server.redirect("/hop2", "/final", 307)
    url = server.redirect("/hop1", server.url("/hop2", host="files.test"), 301)
    resolver_calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolver_calls.append(host)
        return ["127.0.0.1"]

    assert fetch(url, server, s3, resolver=resolver).size == image.stat().st_size
    assert resolver_calls == ["files.test", "files.test"]  # hop 2 and the final hop, each vetted
    assert server.hosts[1:] == [f"files.test:{server.port}"] * 2


def test_redirect_to_a_refused_address_is_refused_without_connecting(
    server: LocalServer, s3: object, connections: list[tuple[str, int]]
) -> None:
    # Given a second server that would answer, behind a name that also resolves to the metadata IP
    other = LocalServer()
    try:
        target = other.url("/latest/meta-data/", host="sneaky.test")
        url = server.redirect("/go", target)
        settings = ImportSettings(
            filter=ImportFilterSettings(allow_loopback=True, allowed_ports=(server.port, other.port))
        )
        resolver = {"sneaky.test": ["127.0.0.1", "169.254.169.254"]}
        # When the redirect is followed
        with pytest.raises(InvalidImportLocation) as refused:
            fetch(url, server, s3, settings=settings, resolver=lambda h, p: resolver[h])
        # Then it is refused, and no connection was made to anything but the first server
        assert refused.value.message == (
            f"URI for legacy import task does not pass filtering: {target} (the host sneaky.test "
            "resolves to a link-local address, such as the cloud's metadata service's, which this "
            "cloud does not import from)"
        )
        assert other.connections == 0
        assert connections == [("127.0.0.1", server.port)]
    finally:
        other.close()


def test_dns_rebinding_cannot_move_the_connection(
    server: LocalServer, s3: object, tmp_path: Path, connections: list[tuple[str, int]]
) -> None:
    # The name resolves to loopback when vetted and to the metadata service any time after.
    answers = iter([["127.0.0.1"]])
    url = server.serve_file("/image", make_raw(tmp_path)).replace("127.0.0.1", "rebind.test")
    fetch(url, server, s3, resolver=lambda h, p: next(answers, ["169.254.169.254"]))
    assert connections == [("127.0.0.1", server.port)]
    assert server.hosts == [f"rebind.test:{server.port}"]


@pytest.mark.parametrize(
    "target",
    [
        "http://a..b/x",  # an empty label: the IDNA codec raises UnicodeError
        "http://" + "a" * 64 + ".invalid/x",  # a label over 63 characters
        "http://bad\x01name.invalid/x",  # a control character (headers are latin-1)
        "http://127.0.0.1:0/x",  # port 0 used to be fetched as port 80
    ],
)
def test_a_redirect_to_an_invalid_host_or_port_fails_with_a_clear_message(
    server: LocalServer, s3: object, connections: list[tuple[str, int]], target: str
) -> None:
    # Given a source that redirects to a location no resolver or socket may be asked about
    url = server.redirect("/go", target)
    # When it is followed, Then the import is refused with the filter's words (not "internal error")
    with pytest.raises(InvalidImportLocation) as refused:
        fetch(url, server, s3, resolver=lambda h, p: ["127.0.0.1"])
    assert target.split("/")[2].split(":")[0][:3] in refused.value.message
    assert refused.value.message.startswith(
        ("The host name in", "The port in", "The given uri holds a character a URL cannot have")
    )
    assert connections == [("127.0.0.1", server.port)]


def test_a_redirect_to_something_that_is_not_a_url_fails_with_a_clear_message(
    server: LocalServer, s3: object
) -> None:
    url = server.redirect("/go", "http://[::1/x")
    with pytest.raises(SourceUnavailable) as refused:
        fetch(url, server, s3)
    assert (
        refused.value.message == f"The image source redirected to an invalid location 'http://[::1/x': {url}"
    )


def test_too_many_redirects(server: LocalServer, s3: object) -> None:
    url = server.redirect("/loop", "/loop")
    with pytest.raises(SourceUnavailable, match="redirected more than 5 times"):
        fetch(url, server, s3)


def test_source_breaking_off_mid_stream(server: LocalServer, s3: object) -> None:
    def broken(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(1024 * 1024))
        handler.end_headers()
        handler.wfile.write(b"\0" * 100_000)
        handler.close_connection = True

    server.routes["/broken"] = broken
    url = server.url("/broken")
    with pytest.raises(TransientSourceError) as failed:
        fetch(url, server, s3)
    assert failed.value.message == f"The image source broke off after 100000 bytes of 1048576: {url}"
    assert staged_keys(s3) == []


def test_slow_source_times_out(server: LocalServer, s3: object) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"\0" * 10)
        handler.wfile.flush()
        time.sleep(1.5)

    server.routes["/slow"] = slow
    with pytest.raises(
        TransientSourceError, match=r"The image source stopped sending for 0\.5 s after \d+ bytes of 1000"
    ):
        fetch(server.url("/slow"), server, s3)
    assert staged_keys(s3) == []


def test_a_source_below_the_minimum_transfer_rate_fails_saying_how_slow_it_was(
    server: LocalServer, s3: object
) -> None:
    # Given a source that trickles 1 KiB every 0.1 s (about 10 KiB/s) of a 1 MiB image, never
    # silent long enough for the read timeout, and a deployment asking for 64 KiB/s over 1 s
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(1024 * 1024))
        handler.end_headers()
        try:
            for _ in range(1024):
                handler.wfile.write(b"\0" * 1024)
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass  # the import hung up, as it should

    server.routes["/trickle"] = trickle
    base = settings_for(server)
    settings = base.model_copy(
        update={
            "http": base.http.model_copy(update={"min_bytes_per_second": 64 * 1024, "rate_window_seconds": 1})
        }
    )

    # When it is imported
    with pytest.raises(SourceTooSlow) as stopped:
        fetch(server.url("/trickle"), server, s3, settings=settings)

    # Then the import stops with what the user can do about it, and nothing is staged
    assert re.fullmatch(
        r"The image source sent [\d.]+ KiB/s over the last \d+ s, below this deployment's minimum of "
        r"64 KiB/s; use a faster source, or upload the image to this cloud's uploads bucket instead\.",
        stopped.value.message,
    )
    assert staged_keys(s3) == []


def test_a_fast_source_passes_the_minimum_transfer_rate(
    server: LocalServer, s3: object, tmp_path: Path
) -> None:
    # Given a deployment with a minimum rate, and an image served at loopback speed
    image = make_raw(tmp_path)
    url = server.serve_file("/disk.raw", image)
    base = settings_for(server)
    settings = base.model_copy(
        update={
            "http": base.http.model_copy(update={"min_bytes_per_second": 64 * 1024, "rate_window_seconds": 1})
        }
    )

    # When it is imported, Then it is staged whole
    result = fetch(url, server, s3, settings=settings)
    assert result.os_hash_value == file_digests(image)[1]


def test_s3_source_under_the_project_prefix(server: LocalServer, s3: object, tmp_path: Path) -> None:
    image = make_raw(tmp_path)
    s3.put_object(Bucket="uploads", Key="uploads/proj1/disk.raw", Body=image.read_bytes())  # type: ignore[attr-defined]
    result = fetch("s3://uploads/uploads/proj1/disk.raw", server, s3, project_id="proj1")
    assert result.os_hash_value == file_digests(image)[1]
    with pytest.raises(SourceUnavailable, match="does not exist: s3://uploads/uploads/proj1/nope"):
        fetch("s3://uploads/uploads/proj1/nope", server, s3, project_id="proj1")
    with pytest.raises(InvalidImportLocation):
        fetch("s3://uploads/uploads/proj2/disk.raw", server, s3, project_id="proj1")


@pytest.mark.parametrize("disk_format", ["raw", "qcow2"])
def test_an_empty_source_is_refused_the_same_way_over_http_and_s3(
    disk_format: str, server: LocalServer, s3: object, tmp_path: Path
) -> None:
    # The upload trigger refuses an empty upload from its event before any task runs; a URL (or
    # an s3:// location given in a task) is refused by the image checks, with one message.
    url = server.serve_file("/empty", make_empty(tmp_path))
    s3.put_object(Bucket="uploads", Key="uploads/proj1/empty.img", Body=b"")  # type: ignore[attr-defined]

    with pytest.raises(ImageRejected) as over_http:
        fetch(url, server, s3, disk_format)
    with pytest.raises(ImageRejected) as from_s3:
        fetch("s3://uploads/uploads/proj1/empty.img", server, s3, disk_format, project_id="proj1")

    assert over_http.value.message == from_s3.value.message == EMPTY_IMAGE
    assert staged_keys(s3) == []


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "UploadPart"
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, TransientStorageError),
        ("InternalError", 500, TransientStorageError),
        ("RequestTimeout", 400, TransientStorageError),
        ("AccessDenied", 403, StagingError),
        ("NoSuchBucket", 404, StagingError),
    ],
)
def test_staging_errors_are_translated(code: str, status: int, expected: type[Exception]) -> None:
    assert isinstance(translate_client_error(client_error(code, status), bucket="b", key="k"), expected)


def test_a_task_that_ended_stops_its_fetch_at_the_next_progress_write_and_leaves_nothing(
    server: LocalServer, s3: object, tmp_path: Path
) -> None:
    # Given a fetch whose progress writes are refused from the third on (the task was cancelled:
    # the tasks table's conditional write raises TaskNotProcessing), with a write on every chunk
    image = tmp_path / "big.raw"
    image.write_bytes(b"\x01" * (20 * 1024 * 1024))
    url = server.serve_file("/big", image)
    written: list[dict[str, object]] = []

    def write(figures: dict[str, object]) -> None:
        if len(written) >= 2:
            raise TaskNotProcessing("Task task-1 is no longer processing")
        written.append(figures)

    clock = iter(range(0, 10_000, 10))  # 10 "seconds" between two looks at the clock
    progress = ProgressReporter("fetch", None, write, clock=lambda: float(next(clock)), interval=5)

    # When it runs, it stops there; nothing is staged and the figures so far were the source's
    with pytest.raises(TaskNotProcessing):
        fetch(url, server, s3, progress=progress)
    assert staged_keys(s3) == []
    assert written[0] == {"step": "fetch", "bytes_done": 0, "bytes_total": 20 * 1024 * 1024, "percent": 0}
    assert 0 < int(written[1]["bytes_done"]) < 20 * 1024 * 1024  # type: ignore[call-overload]


def test_a_source_announcing_more_than_lambda_moves_is_handed_to_the_container_runner_unread(
    server: LocalServer, s3: object, tmp_path: Path
) -> None:
    # Given a Lambda that moves at most 1 MiB and a container runner, and a 2 MiB source
    image = tmp_path / "big.raw"
    image.write_bytes(b"\1" * (2 * 1024 * 1024))
    url = server.serve_file("/big", image)
    runner = RunnerLimits(
        working_space_bytes=512 * 1024 * 1024,
        container_working_space_bytes=200 * 1024**3,
        lambda_max_transfer_bytes=1024 * 1024,
    )
    settings = settings_for(server).model_copy(update={"runner": runner})
    # When it is fetched on Lambda
    with pytest.raises(NeedsContainer, match="announces 2097152 bytes"):
        fetch(url, server, s3, settings=settings)
    # Then nothing was staged; on the container runner the same fetch goes through
    assert staged_keys(s3) == []
    container = settings.model_copy(
        update={"runner": RunnerLimits(runner="container", working_space_bytes=1)}
    )
    assert fetch(url, server, s3, settings=container).size == 2 * 1024 * 1024


@pytest.mark.parametrize("sends", ["trickle", "nothing", "no_answer"])
def test_a_fetch_whose_task_was_cancelled_closes_its_source_and_stages_nothing(
    server: LocalServer, s3: object, sends: str
) -> None:
    # Given a source that trickles 1 KiB every 0.2 s (never silent long enough for the read
    # timeout), sends nothing after its headers, or does not even answer, and a task cancelled
    # once the fetch has begun
    served = threading.Event()
    closed = threading.Event()

    def held(handler: BaseHTTPRequestHandler) -> None:
        if sends == "no_answer":
            served.set()
            for _ in range(600):
                if peer_closed(handler.connection):
                    break
                time.sleep(0.2)
            closed.set()
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(64 * 1024 * 1024))
        handler.end_headers()
        handler.wfile.flush()
        served.set()
        try:
            for _ in range(600):  # two minutes at most
                if sends == "trickle":
                    handler.wfile.write(b"\0" * 1024)  # raises once the client cut the connection
                    handler.wfile.flush()
                elif peer_closed(handler.connection):
                    break
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            closed.set()

    server.routes["/held"] = held
    wanted = threading.Event()
    wanted.set()
    settings = settings_for(server).model_copy(
        update={"http": HttpSourceSettings(connect_timeout_seconds=2, read_timeout_seconds=120)}
    )
    failures: list[BaseException] = []

    def run() -> None:
        try:
            fetch(server.url("/held"), server, s3, settings=settings, watch=SourceWatch(wanted.is_set, 0.5))
        except BaseException as error:
            failures.append(error)

    fetching = threading.Thread(target=run)
    fetching.start()
    assert served.wait(30), "the fetch never reached its source"

    # When the task is cancelled (its "still wanted" answer turns to no)
    wanted.clear()

    # Then the fetch stops well before the read timeout, closing the source, staging nothing
    fetching.join(15)
    assert not fetching.is_alive(), "the fetch kept reading its source"
    assert closed.wait(15), "the source connection stayed open"
    assert [type(error) for error in failures] == [TaskNotProcessing]
    assert staged_keys(s3) == []


def peer_closed(connection: socket.socket) -> bool:
    """Whether the other end closed the connection (a read would find its end), without reading."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except OSError:
        return True


def test_a_watched_fetch_of_a_task_still_wanted_completes(
    server: LocalServer, s3: object, tmp_path: Path
) -> None:
    asked: list[bool] = []

    def still_wanted() -> bool:
        asked.append(True)
        return True

    url = server.serve_file("/disk.raw", make_raw(tmp_path))
    result = fetch(url, server, s3, watch=SourceWatch(still_wanted, 0.01))

    assert result.size > 0 and staged_keys(s3) == ["staging/task-1"]
