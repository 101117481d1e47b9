"""Time as the service stores and shows it.

Stored timestamps keep microseconds so that tasks created within the same second still sort in
creation order; the API shows them at second precision, as Glance does (`2026-11-25T10:00:00Z`).
"""

from __future__ import annotations

from datetime import UTC, datetime

STORED_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def now() -> datetime:
    return datetime.now(UTC)


def to_stored(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(STORED_FORMAT)


def from_stored(value: str) -> datetime:
    return datetime.strptime(value, STORED_FORMAT).replace(tzinfo=UTC)


def to_api(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_to_api(seconds: int) -> str:
    return to_api(datetime.fromtimestamp(seconds, UTC))
