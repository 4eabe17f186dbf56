"""Fixtures of the master's unit tests (test_master_*.py), and the session's certificates
for the TLS tests (test_tls*.py, test_wire.py over TLS)."""

from __future__ import annotations

import os
import shutil

import pytest
from support.fake_system import FakeSystem
from support.tls import make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA, two server certificates (serials 1001, 1002) and a client one, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def system(monkeypatch):
    """The fake OS seam; a real fork in the test process fails the test."""

    def refuse() -> int:
        raise AssertionError("a master unit test forked for real")

    monkeypatch.setattr(os, "fork", refuse)
    fake = FakeSystem()
    yield fake
    fake.close()
