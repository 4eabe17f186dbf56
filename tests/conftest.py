"""Fixtures shared by the whole suite: a polycorn launcher that cleans up by pid."""

from __future__ import annotations

import shutil

import pytest
from support.procs import Polycorn, free_port
from support.tls import make_pki


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def polycorn(tmp_path):
    """Start polycorn processes; all of them (and their children) are killed after the test."""
    started: list[Polycorn] = []

    def start(*args: str, wait_port: int | None = None, **kw) -> Polycorn:
        p = Polycorn(list(args), log_path=tmp_path / f"polycorn-{len(started)}.log", **kw)
        started.append(p)
        if wait_port:
            p.wait_port(wait_port)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA, two server certificates (serials 1001, 1002) and a client one, made by openssl
    (support/tls.py), for the TLS tests."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    return make_pki(tmp_path_factory.mktemp("pki"))
