"""The slowest transfer an import accepts: a source must send at least the deployment's minimum over
every sliding window (the first one from the moment the source is opened).

A fetch runs inside one Lambda invocation of at most 15 minutes; a source that trickles data (or
sends a byte just often enough to dodge the socket's read timeout) would hold a processing slot
until the step times out, and its user would learn nothing useful. This fails it early, saying how
fast the source was. Plain Python: the clock is injected, so tests need no waiting.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from imagetasks.domain.import_errors import SourceTooSlow

KiB = 1024
#: How many samples a window keeps at most: the window measured is between one and 1 + 1/32 windows.
SAMPLES_PER_WINDOW = 32


def kib_per_second(bytes_per_second: float) -> str:
    """12.0 → "12", 0.25 → "0.2": what a person reads in a message."""
    value = bytes_per_second / KiB
    text = f"{value:.0f}" if value >= 10 else f"{value:.1f}"
    return text.removesuffix(".0")


class TransferRateGuard:
    """Counts the bytes of one transfer and raises ``SourceTooSlow`` as soon as a whole window has
    passed in which fewer than ``min_bytes_per_second * window_seconds`` bytes arrived.

    It only looks when data arrives (``received``): a source that sends nothing at all is the
    socket read timeout's to catch. ``min_bytes_per_second == 0`` switches the check off."""

    def __init__(
        self,
        min_bytes_per_second: float,
        window_seconds: float,
        *,
        advice: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self._min_rate = min_bytes_per_second
        self._window = window_seconds
        self._advice = advice
        self._clock = clock
        self._total = 0
        self._spacing = window_seconds / SAMPLES_PER_WINDOW
        # (time, bytes received by then), oldest first; the first is the start of the transfer.
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])

    @property
    def enabled(self) -> bool:
        return self._min_rate > 0

    def received(self, size: int) -> None:
        """Count `size` more bytes; raise SourceTooSlow if the last window was below the minimum."""
        if not self.enabled:
            return
        now = self._clock()
        self._total += size
        # The newest sample at least a window old is where the measured period starts; older ones
        # can go (keep that one).
        while len(self._samples) > 1 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        start, total_then = self._samples[0]
        elapsed = now - start
        if elapsed >= self._window:
            rate = (self._total - total_then) / elapsed
            if rate < self._min_rate:
                raise SourceTooSlow(
                    f"The image source sent {kib_per_second(rate)} KiB/s over the last "
                    f"{elapsed:.0f} s, below this deployment's minimum of "
                    f"{kib_per_second(self._min_rate)} KiB/s; {self._advice}"
                )
        if now - self._samples[-1][0] >= self._spacing:
            self._samples.append((now, self._total))
