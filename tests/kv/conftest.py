"""Fixtures shared by the kv tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.cli import serve as serve_mod
from liferaft.kv.serve import ServeOptions
from tests.kv.test_api import Api


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[ServeOptions]:
    """Replace the server of `liferaft serve` with a recorder of the options
    it would run with: for tests that only parse flags."""
    got: list[ServeOptions] = []

    async def fake_serve(o: ServeOptions, ctx: Any = None, front_ends: Any = ()) -> None:
        got.append(o)

    monkeypatch.setattr(serve_mod, "serve", fake_serve)
    return got


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """A 3-node cluster in this process, an HTTP server per node."""
    a = Api(tmp_path, timeout=2.0)
    await a.start()
    try:
        yield a
    finally:
        await a.stop()
