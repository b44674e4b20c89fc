"""The reliability suite's long mode (``TEMU_SYNC_LONG=1``) runs 40 trials where the quick mode
runs 10: a whole test then takes minutes, more than the 120 s pytest-timeout that bounds a hung
test in CI (pyproject.toml), so each test of the long mode gets a bound of its own size."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.reliability.harness import LONG
from tests.reliability.temu_double import TemuDouble

LONG_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not LONG:
        return
    for item in items:
        if "tests/reliability/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_S))


@pytest.fixture
async def double() -> AsyncIterator[TemuDouble]:
    """A started Temu router double (tests/reliability/temu_double.py)."""
    d = TemuDouble()
    await d.start()
    try:
        yield d
    finally:
        await d.stop()
