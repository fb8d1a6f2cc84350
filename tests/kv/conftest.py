"""Fixtures shared by the kv tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kv.test_api import Api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """A 3-node cluster in this process, an HTTP server per node."""
    a = Api(tmp_path, timeout=2.0)
    await a.start()
    try:
        yield a
    finally:
        await a.stop()
