"""Shared pytest options.

``--rewrite`` regenerates the expected output of golden interaction scripts
(tests/core/testdata/*.txt) instead of comparing against it.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the expected output of golden interaction scripts",
    )


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--rewrite"))
