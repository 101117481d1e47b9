"""The API handlers as fixtures, each built again for the test's moto (the `aws` fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import images_api_handler, tasks_api_handler


@pytest.fixture
def images(aws: dict[str, str]) -> Any:
    return images_api_handler()


@pytest.fixture
def tasks_api(aws: dict[str, str]) -> Any:
    return tasks_api_handler()
