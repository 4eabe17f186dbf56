"""Fixtures of the master's unit tests (test_master_*.py)."""

from __future__ import annotations

import os

import pytest
from support.fake_system import FakeSystem


@pytest.fixture
def system(monkeypatch):
    """The fake OS seam; a real fork in the test process fails the test."""

    def refuse() -> int:
        raise AssertionError("a master unit test forked for real")

    monkeypatch.setattr(os, "fork", refuse)
    fake = FakeSystem()
    yield fake
    fake.close()
