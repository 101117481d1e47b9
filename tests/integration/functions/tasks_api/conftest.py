"""`api`: the tasks API handler, built again for the test's moto (a file may define its own)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import tasks_api_handler


@pytest.fixture
def api(aws: dict[str, str]) -> Any:
    return tasks_api_handler()
