"""Every test under tests/integration is marked ``integration`` here (``-m "not integration"``
leaves them out), and gets a fresh server from the ``server`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.etcdcluster import EtcdCluster
from tests.support.helpers import DnsdiscProcess, running

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's collection hook sees the whole session's items, not only this directory's.
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DnsdiscProcess]:
    """A fresh dnsdisc with SQLite storage in a temp dir, on free loopback ports."""
    with running(tmp_path) as srv:
        yield srv


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A real etcd cluster on loopback, for the tests of several nodes sharing a registry."""
    cluster = EtcdCluster(tmp_path / "etcd").start()
    try:
        yield cluster
    finally:
        for m in cluster.members:
            cluster.freeze(m, False)  # a failed test must not leave a stopped member behind
        cluster.stop()
