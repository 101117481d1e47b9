"""A local HTTP server that serves images of any size generated on the fly (no disk, no page cache).

The bytes are a fixed pseudo-random 64 MiB block repeated up to the size asked for in the path,
``/image-<bytes>.raw``: random-looking data is what hashing really costs, and a reader that asks for
the same size twice gets the same bytes (so the reference can hash exactly what was served).
``/held-<bytes>.raw`` trickles 1 KiB every 5 s until ``held_release`` is set: a task that stays busy.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MiB = 1024 * 1024
BLOCK_SIZE = 64 * MiB
SEED = 20250101
_PATH = re.compile(r"^/(image|held)-(\d+)\.raw$")
#: Requests for /held-<bytes>.raw wait until this is set (a source that keeps its task busy).
held_release = threading.Event()
held_requested = threading.Event()
_block: bytes | None = None
_block_lock = threading.Lock()


def block() -> bytes:
    """The repeated block; the first 512 bytes are zeroed so no inspector takes it for an MBR/GPT."""
    global _block
    with _block_lock:
        if _block is None:
            data = bytearray(random.Random(SEED).randbytes(BLOCK_SIZE))
            data[:512] = bytes(512)
            _block = bytes(data)
        return _block


def chunks(size: int, chunk_size: int = 8 * MiB, start: int = 0) -> Iterator[memoryview]:
    """The served bytes of an image of ``size`` bytes (from ``start`` on), as views of the block."""
    view = memoryview(block())
    sent = start
    while sent < size:
        offset = sent % BLOCK_SIZE
        n = min(chunk_size, size - sent, BLOCK_SIZE - offset)
        yield view[offset : offset + n]
        sent += n


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        match = _PATH.match(self.path)
        if match is None:
            self.send_error(404)
            return
        size = int(match.group(2))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            sent = 0
            if match.group(1) == "held":
                # 1 KiB every 5 s until released: the fetch stays busy, never meeting a read timeout.
                held_requested.set()
                while not held_release.wait(5) and sent + 1024 < min(size, BLOCK_SIZE):
                    self.wfile.write(block()[sent : sent + 1024])
                    self.wfile.flush()
                    sent += 1024
            for piece in chunks(size, 16 * MiB, start=sent):
                self.wfile.write(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ImageServer:
    def __init__(self) -> None:
        block()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, size: int) -> str:
        return f"http://127.0.0.1:{self.port}/image-{size}.raw"

    def held_url(self, size: int) -> str:
        """An image whose request waits for `held_release` before any byte is sent."""
        return f"http://127.0.0.1:{self.port}/held-{size}.raw"

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        held_release.set()
        self._server.shutdown()
        self._server.server_close()
