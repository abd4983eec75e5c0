"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tgt import Tgtd


@pytest.fixture
def tgtd() -> Iterator[Tgtd]:
    """A fresh tgtd on 127.0.0.1 with no targets; add them with `tgtd.add_target(...)`."""
    t = Tgtd()
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture
def db_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty database directory, exported as ISCSI_DB_DIR."""
    d = tmp_path / "db"
    monkeypatch.setenv("ISCSI_DB_DIR", str(d))
    return d
