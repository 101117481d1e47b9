"""A local HTTP server that serves images of any size generated on the fly (no disk, no page cache).

The bytes are a fixed pseudo-random 64 MiB block repeated up to the size asked for in the path,
``/image-<bytes>.raw``: random-looking data is what hashing really costs, and a reader that asks for
the same size twice gets the same bytes (so the reference can hash exactly what was served).
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
_PATH = re.compile(r"^/image-(\d+)\.raw$")
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


def chunks(size: int, chunk_size: int = 8 * MiB) -> Iterator[memoryview]:
    """The served bytes of an image of ``size`` bytes, as views of the block."""
    view = memoryview(block())
    sent = 0
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
        size = int(match.group(1))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            for piece in chunks(size, 16 * MiB):
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

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
