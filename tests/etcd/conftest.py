"""Fixtures of the etcd-protocol tests: the real etcdctl client."""

from __future__ import annotations

import pytest

from tests.etcd.etcdctl import find_etcdctl


@pytest.fixture(scope="session")
def etcdctl() -> str:
    """The path of etcdctl 3.4.x; the test skips (fails under CI=true) when
    there is none.  See tests/etcd/etcdctl.py."""
    return find_etcdctl()
