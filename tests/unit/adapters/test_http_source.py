"""A slow source, or one without a known length, still moves its task's progress every few
seconds: what arrived is handed on at least every second instead of only in whole 8 MiB chunks."""

from __future__ import annotations

import gzip
import itertools
from typing import Any

from imagetasks.adapters.http_source import HttpSource, HttpSourceSettings
from imagetasks.domain import compression
from imagetasks.domain.compression import DecompressedSource, DecompressionSettings
from imagetasks.domain.import_filter import ImportFilter
from imagetasks.domain.progress import ProgressReporter

KiB = 1024


class Clock:
    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class TrickleResponse:
    """A body arriving 4 KiB at a time, without Content-Length."""

    def __init__(self, pieces: int) -> None:
        self.pieces = pieces

    def read1(self, size: int) -> bytes:
        if not self.pieces:
            return b""
        self.pieces -= 1
        return b"x" * 4 * KiB

    def release_conn(self) -> None:
        pass


def test_a_trickling_source_hands_on_what_arrived_every_second() -> None:
    # Given a source sending 4 KiB per read, a read every 0.25 s (about 16 KiB/s, no length)
    source = HttpSource(ImportFilter(), HttpSourceSettings(), clock=Clock(0.25))
    # When its chunks are read
    chunks = list(source._chunks(TrickleResponse(100), "http://source.invalid/x", None))  # type: ignore[arg-type]
    # Then they come about every second (4 reads), not after 8 MiB, and nothing is lost
    assert sum(map(len, chunks)) == 400 * KiB
    assert len(chunks) >= 20 and max(map(len, chunks)) <= 5 * 4 * KiB


def test_the_task_progress_moves_at_least_every_five_seconds_for_such_a_source() -> None:
    clock = Clock(0.25)
    writes: list[dict[str, Any]] = []
    progress = ProgressReporter("fetch", None, writes.append, clock=clock)
    source = HttpSource(ImportFilter(), HttpSourceSettings(), clock=clock)
    for chunk in source._chunks(TrickleResponse(400), "http://source.invalid/x", None):  # type: ignore[arg-type]
        progress.feed(chunk)
    # 400 reads at 0.25 s (ProgressReporter reads the same clock): 100 s, a write every 5 s
    assert len(writes) >= 15
    done = [write["bytes_done"] for write in writes]
    assert done == sorted(done) and all(b > a for a, b in itertools.pairwise(done))
    assert all(write["bytes_total"] is None and write["percent"] is None for write in writes)


def test_decompressed_output_of_a_slow_source_is_handed_on_every_second(monkeypatch: Any) -> None:
    data = gzip.compress(bytes(range(256)) * 4096)  # 1 MiB of image, well compressed
    pieces = [data[i : i + 512] for i in range(0, len(data), 512)]
    clock = Clock(0.3)
    source = DecompressedSource(iter(pieces), DecompressionSettings(), clock=clock)
    chunks = list(source)
    assert b"".join(chunks) == bytes(range(256)) * 4096
    assert len(chunks) > 1  # not one chunk at the end
    assert compression.FLUSH_SECONDS <= 1.0
