"""ImagesTable.update under contention: bounded tries with growing random pauses, then a 409."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from imagetasks.adapters import images_table as module
from imagetasks.adapters.images_table import ImagesTable
from imagetasks.domain.errors import ConcurrentUpdate
from imagetasks.domain.images import Image, ImageStatus

MOMENT = datetime(2026, 12, 7, tzinfo=UTC)
IMAGE = Image(
    id="5e0c8f4e-0000-4000-8000-000000000001",
    status=ImageStatus.QUEUED,
    disk_format="raw",
    container_format="bare",
    owner="p",
    created_at=MOMENT,
    updated_at=MOMENT,
)


def contended(outcomes: list[Any]) -> tuple[ImagesTable, list[float]]:
    """A table whose writes meet other writers as `outcomes` says (False: changed meanwhile,
    an exception: DynamoDB's TransactionConflict), then succeed; the pauses it takes."""
    table = ImagesTable("images")
    pauses: list[float] = []
    table.get = lambda image_id: IMAGE  # type: ignore[method-assign]

    def replace(before: Image, after: Image, guard: Any = None) -> bool:
        outcome = outcomes.pop(0) if outcomes else True
        if isinstance(outcome, Exception):
            raise outcome
        return bool(outcome)

    table.replace = replace  # type: ignore[method-assign]
    return table, pauses


def test_a_write_that_clashes_is_tried_again_after_a_growing_random_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table, pauses = contended([False, ConcurrentUpdate("conflict"), False])
    monkeypatch.setattr(module.time, "sleep", pauses.append)
    changed = table.update(IMAGE.id, lambda image: image.model_copy(update={"name": "x"}))
    assert changed.name == "x" and len(pauses) == 3
    assert all(0 <= pause <= module.UPDATE_BACKOFF_SECONDS * 2**n for n, pause in enumerate(pauses))


class FakeClock:
    """`time` for the adapter: `sleep` moves `monotonic` on, and nothing really waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_write_that_keeps_clashing_is_a_conflict_within_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    table, _ = contended([False] * 100)
    clock = FakeClock()
    monkeypatch.setattr(module, "time", clock)
    with pytest.raises(ConcurrentUpdate, match="try again"):
        table.update(IMAGE.id, lambda image: image)
    assert clock.now - 1000.0 <= module.UPDATE_SECONDS
