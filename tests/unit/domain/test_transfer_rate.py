"""The minimum transfer rate of imports, on a clock the test moves (no waiting, no timings)."""

from __future__ import annotations

import pytest

from imagetasks.domain.import_errors import ImportRejected, SourceTooSlow
from imagetasks.domain.transfer_rate import TransferRateGuard, kib_per_second

KiB = 1024
ADVICE = "use a faster source, or upload the image to this cloud's uploads bucket instead."


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(clock: FakeClock, min_kibps: float = 64, window: float = 30) -> TransferRateGuard:
    return TransferRateGuard(min_kibps * KiB, window, advice=ADVICE, clock=clock)


def test_a_source_at_the_minimum_or_faster_is_never_stopped() -> None:
    # Given a source sending 64 KiB every second, for ten minutes
    clock = FakeClock()
    rate = guard(clock)

    # When each second's data arrives, Then nothing is raised
    for _ in range(600):
        clock.now += 1
        rate.received(64 * KiB)


def test_a_slow_source_fails_once_a_whole_window_is_below_the_minimum_saying_how_slow() -> None:
    # Given a source sending 12 KiB every second against a minimum of 64 KiB/s over 30 s
    clock = FakeClock()
    rate = guard(clock)

    # When its data arrives second by second
    seconds = 0
    with pytest.raises(SourceTooSlow) as stopped:
        while seconds < 100:
            clock.now += 1
            seconds += 1
            rate.received(12 * KiB)

    # Then it is stopped after exactly one window, with a message a user can act on
    assert seconds == 30
    assert stopped.value.message == (
        "The image source sent 12 KiB/s over the last 30 s, below this deployment's minimum of "
        f"64 KiB/s; {ADVICE}"
    )
    assert isinstance(stopped.value, ImportRejected)  # final: a retry would be as slow


def test_a_source_that_slows_down_after_a_fast_start_is_stopped_by_the_sliding_window() -> None:
    # Given a source that sent 100 MiB in its first 10 s, then 1 KiB/s
    clock = FakeClock()
    rate = guard(clock)
    for _ in range(10):
        clock.now += 1
        rate.received(10 * 1024 * KiB)

    # When the slow part lasts longer than a window
    slow_seconds = 0
    with pytest.raises(SourceTooSlow) as stopped:
        while slow_seconds < 200:
            clock.now += 1
            slow_seconds += 1
            rate.received(KiB)

    # Then it is stopped once the fast start has left the window (not averaged over the whole transfer)
    assert 30 <= slow_seconds <= 32
    assert "sent 1 KiB/s over the last" in stopped.value.message


def test_a_source_that_sends_rarely_is_measured_over_the_time_it_really_took() -> None:
    # Given a source whose first byte comes after 50 s (within a 60 s socket read timeout)
    clock = FakeClock()
    rate = guard(clock)
    clock.now += 50

    # When it arrives, Then the period measured is the 50 s since the source was opened
    with pytest.raises(SourceTooSlow, match=r"sent 0 KiB/s over the last 50 s"):
        rate.received(1)


def test_bursts_that_meet_the_minimum_over_each_window_pass() -> None:
    # Given a source that sends 1 MiB at once every 10 s (about 102 KiB/s on average)
    clock = FakeClock()
    rate = guard(clock)

    # When it does so for ten minutes, Then nothing is raised
    for _ in range(60):
        clock.now += 10
        rate.received(1024 * KiB)


def test_a_minimum_of_zero_switches_the_check_off() -> None:
    clock = FakeClock()
    rate = guard(clock, min_kibps=0)
    assert not rate.enabled
    clock.now += 3600
    rate.received(1)


def test_the_samples_kept_stay_bounded_whatever_the_number_of_reads() -> None:
    # Given many small reads over a long, fast transfer
    clock = FakeClock()
    rate = guard(clock)
    for _ in range(100_000):
        clock.now += 0.01
        rate.received(64 * KiB)

    # Then the guard remembers about one window's worth of samples, not every read
    assert len(rate._samples) <= 34


@pytest.mark.parametrize(
    ("bytes_per_second", "text"),
    [(12 * KiB, "12"), (64 * KiB, "64"), (0.25 * KiB, "0.2"), (0, "0"), (1.5 * KiB, "1.5")],
)
def test_rates_read_like_a_person_would_write_them(bytes_per_second: float, text: str) -> None:
    assert kib_per_second(bytes_per_second) == text
