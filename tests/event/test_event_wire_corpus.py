"""The HTTP layer's request corpus over real sockets against `-k event`, with each parser.

Every valid request must reach the app as parsed (method, target, body) and be
answered 200; every invalid one must be refused with its status. Cases whose
limits have no command-line flag (chunk-size digits, chunk extensions) are
covered by the pure parity test instead.
"""

from __future__ import annotations

import contextlib
import json
import socket

import pytest
from corpus import Invalid, Valid
from corpus.invalid import CASES as INVALID
from corpus.valid import CASES as VALID
from event_support import VARIANTS, EventServer, Reader, skip_if_missing
from polycorn.server.http.connection import Limits
from support.tls import HalfClosingTLS

DEFAULT = Limits()


def flags_for(limits: Limits) -> tuple[str, ...] | None:
    """The command line giving these limits, or None if it cannot be expressed."""
    if (limits.max_chunk_size_digits, limits.max_chunk_ext_size) != (
            DEFAULT.max_chunk_size_digits, DEFAULT.max_chunk_ext_size):
        return None
    flags = ("--limit-request-line", str(limits.max_request_line),
             "--limit-request-fields", str(limits.max_header_count),
             "--limit-request-field_size", str(limits.max_header_size))
    return (*flags, "--permit-obsolete-folding") if limits.permit_obsolete_folding else flags


CASES = [c for c in [*VALID, *INVALID] if flags_for(c.limits) is not None]


# The corpus over TLS too (--certfile): the parser's strictness must not depend on what
# carries the bytes.
TLS = "-tls"


@pytest.fixture(scope="module")
def servers(tmp_path_factory, request):
    """One server per (variant, limits), started on first use."""
    started: dict[tuple[str, tuple[str, ...]], EventServer] = {}

    def get(variant: str, flags: tuple[str, ...]) -> EventServer:
        key = (variant, flags)
        if key not in started:
            tls: tuple[str, ...] = ()
            if variant.endswith(TLS):
                pki = request.getfixturevalue("pki")
                tls = ("--certfile", str(pki.cert), "--keyfile", str(pki.key))
            started[key] = EventServer(tmp_path_factory.mktemp("corpus"), "-w", "1", *tls,
                                       *flags, env=VARIANTS[variant.removesuffix(TLS)])
            if tls:
                started[key].ssl_context = pki.client_context()
        return started[key]
    yield get
    for srv in started.values():
        srv.stop()


def send(server: EventServer, raw: bytes, *, eof: bool, method: str):
    sock = (server.connect() if server.ssl_context is None
            else HalfClosingTLS(server.port, server.ssl_context))  # eof: close_notify
    with contextlib.closing(sock):
        sock.sendall(raw)
        if eof:
            sock.shutdown(socket.SHUT_WR)
        return Reader(sock).response(method)


@pytest.mark.parametrize("variant", ["compiled", "llhttp-uvloop", "pure-parser", "compiled" + TLS])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_case_over_the_wire(servers, variant: str, case: Valid | Invalid) -> None:
    skip_if_missing(variant.removesuffix(TLS))
    server = servers(variant, flags_for(case.limits))
    if isinstance(case, Invalid):
        response = send(server, case.raw, eof=case.eof, method="GET")
        assert response.status == case.status
        assert response.headers["connection"] == "close"
        return
    request = case.request
    method = request.method.decode("latin-1")
    response = send(server, case.raw, eof=False, method=method)
    assert response.status == 200
    if request.expect_continue:
        assert response.interim == [100]
    if method == "HEAD":
        return
    echo = json.loads(response.body)
    assert echo["method"] == method
    assert echo["uri"] == request.target.decode("latin-1")
    assert echo["body"].encode("latin-1") == case.body
    assert echo["protocol"] == "HTTP/" + request.http_version.decode()


@pytest.mark.parametrize("case", [c for c in CASES if c.limits == DEFAULT], ids=lambda c: c.name)
def test_corpus_case_on_the_asyncio_loop(servers, case: Valid | Invalid) -> None:
    server = servers("asyncio-loop", flags_for(DEFAULT))
    if isinstance(case, Invalid):
        assert send(server, case.raw, eof=case.eof, method="GET").status == case.status
    else:
        assert send(server, case.raw, eof=False, method=case.request.method.decode()).status == 200
