from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import DnsdiscProcess, running


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DnsdiscProcess]:
    """A fresh dnsdisc with SQLite storage in a temp dir, on free loopback ports."""
    with running(tmp_path) as srv:
        yield srv
