"""The compiled app call and response (server/accel_respond.c) against the Python cycle.

The event worker's protocol runs the same requests through the same app twice:
once with ServingContext.native_respond (the compiled start_response and
response framing), once with it off (run_app, StartResponse, respond_whole), and
must write the same bytes, show the app the same environ and log the same
errors. The apps cover the common answer and every one the compiled side must
hand back to Python (generators, odd items, close(), exc_info, write(), errors,
HEAD, 204/304, missing or wrong Content-Length, a drain during the call).
In-process objects only; `make test-asan` runs this file under ASan and UBSan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import time

import pytest
from corpus.valid import CASES as VALID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polycorn.server import accel
from polycorn.server.http.connection import Limits
from polycorn.server.http.cycle import _END_TO
from polycorn.server.workers.base import RunState
from polycorn.server.workers.event_phase import Phase
from wsgi_support import RecordingAccessLog, make_cfg

pytestmark = [
    pytest.mark.skipif(accel.native is None, reason=f"no compiled accelerator: {accel.describe()}"),
    pytest.mark.filterwarnings("ignore:coroutine 'ServingContext.start_accepting'"),
]

FUZZ = settings(max_examples=int(os.environ.get("POLYCORN_ACCEL_EXAMPLES", "200")),
                deadline=None, suppress_health_check=[HealthCheck.too_slow])
DATE_LINE = re.compile(rb"\r\nDate: [^\r]*\r\n")
HELLO = [("Content-Type", "text/plain"), ("Content-Length", "5")]


class Closing(list):
    """A list with close(): never an exact list."""

    closed = 0

    def close(self) -> None:
        Closing.closed += 1


class Chunk(bytes):
    """A bytes subclass as a body item."""


def _raise_after(start_response, headers):
    start_response("200 OK", headers)
    raise RuntimeError("after start_response")


def _exc_info(environ, start_response):
    start_response("200 OK", HELLO)
    try:
        raise ValueError("changed my mind")
    except ValueError:
        start_response("500 Oops", [("Content-Length", "3")], sys.exc_info())
    return [b"bad"]


def _twice(environ, start_response):
    start_response("200 OK", HELLO)
    start_response("200 OK", HELLO)
    return [b"hello"]


def _write(environ, start_response):
    start_response("200 OK", [("Content-Length", "10")])(b"hello")
    return [b"world"]


def _generator(environ, start_response):
    start_response("200 OK", HELLO)
    yield b"hel"
    yield b"lo"


def _keywords(environ, start_response):
    start_response(status="200 OK", headers=HELLO)
    return [b"hello"]


def _echo(environ, start_response):
    keys = sorted(k for k, v in environ.items() if type(v) is str)
    body = "|".join(f"{k}={environ[k]}" for k in keys).encode() + environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", str(len(body))), ("X-N", "1")])
    return [body]


def _drain(environ, start_response):
    environ["test.worker"].state = RunState.DRAINING  # a drain began during the call
    start_response("200 OK", HELLO)
    return [b"hello"]


def _simple(status, headers, result):
    def app(environ, start_response):
        start_response(status, list(headers))
        return result() if callable(result) else result
    return app


APPS = {
    "hello": _simple("200 OK", HELLO, [b"hello"]),
    "tuple": _simple("200 OK", HELLO, (b"hello",)),
    "empty list": _simple("200 OK", [("Content-Length", "0")], []),
    "empty chunk": _simple("200 OK", [("Content-Length", "0")], [b""]),
    "two chunks": _simple("200 OK", HELLO, [b"hel", b"lo"]),
    "leading empty": _simple("200 OK", HELLO, [b"", b"hello"]),
    "large": _simple("200 OK", [("Content-Length", "20000")], [b"x" * 20000]),
    "at writev size": _simple("200 OK", [("Content-Length", "16384")], [b"y" * 16384]),
    "no length": _simple("200 OK", [("Content-Type", "text/plain")], [b"hello"]),
    "short length": _simple("200 OK", [("Content-Length", "9")], [b"hello"]),
    "long length": _simple("200 OK", [("Content-Length", "2")], [b"hello"]),
    "204": _simple("204 No Content", [], [b""]),
    "204 body": _simple("204 No Content", HELLO, [b"hello"]),
    "304": _simple("304 Not Modified", HELLO, [b"hello"]),
    "close": _simple("200 OK", [*HELLO, ("Connection", "close")], [b"hello"]),
    "hop-by-hop": _simple("200 OK", [*HELLO, ("Keep-Alive", "5"), ("Upgrade", "x")], [b"hello"]),
    "new status": _simple("299 Odd Thing", HELLO, [b"hello"]),
    "bad status": _simple("20 OK", HELLO, [b"hello"]),
    "bad header": _simple("200 OK", [("X\r\nY", "1")], [b"hello"]),
    "tuple headers": _simple("200 OK", tuple(HELLO), [b"hello"]),
    "str item": _simple("200 OK", HELLO, ["hello"]),
    "bytes subclass": _simple("200 OK", HELLO, [Chunk(b"hello")]),
    "with close": _simple("200 OK", HELLO, lambda: Closing([b"hello"])),
    "none": _simple("200 OK", HELLO, None),
    "generator": _generator,
    "raise": lambda environ, start_response: 1 / 0,
    "raise after start": lambda environ, start_response: _raise_after(start_response, HELLO),
    "no start_response": lambda environ, start_response: [b"hello"],
    "exc_info": _exc_info,
    "twice": _twice,
    "write": _write,
    "keywords": _keywords,
    "echo": _echo,
    "drain": _drain,
    "sys.exit": lambda environ, start_response: sys.exit(3),
}

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a?b=c HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    # A trusted front end's headers (the client is 127.0.0.1): _finish_native's to read.
    b"GET /s HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n",
    b"GET /s/x HTTP/1.1\r\nHost: h\r\nScript-Name: /s\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 1.2.3.4\r\nX-New-Name: 1\r\n\r\n",
    b"GET /%41?x=%42 HTTP/1.1\r\nHost: h\r\nCookie: a\r\nCookie: b\r\n\r\n",
]


class _Transport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.lines: list = []  # what writelines was given

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, parts) -> None:
        self.lines.append(parts)
        for part in parts:
            self.out += part

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.lines.append((record.levelno, record.getMessage(), repr(exc)))


def serve(compiled: bool, app, raw: bytes | list[bytes], bytewise: bool = False,
          limits: Limits | None = None, transport: _Transport | None = None,
          ) -> tuple[bytes, list, int, tuple]:
    """(bytes written, error log lines, calls of respond_whole and _split_next_head, the
    connection's state after the reads) of the event protocol for raw."""
    from polycorn.server.http.accel_connection import AccelConnection
    from polycorn.server.workers.event_context import ServingContext
    from polycorn.server.workers.event_protocol import HTTPProtocol
    from polycorn.server.wsgi.environ import EnvironBuilder
    from polycorn.server.wsgi.handler import WSGIHandler

    calls = []

    class Counted(AccelConnection):
        __slots__ = ()

        def respond_whole(self, *args):
            calls.append(args)
            return AccelConnection.respond_whole(self, *args)

        def _split_next_head(self):
            calls.append("head split in Python")
            return AccelConnection._split_next_head(self)

    cfg = make_cfg(worker_connections=10, backlog=16, health_check=None)
    handler = WSGIHandler(app, cfg, None, RecordingAccessLog(enabled=False))

    class Worker:
        state = RunState.RUNNING
        alive = True
        ssl_context = None

        def __init__(self) -> None:
            self.cfg, self.handler, self.app = cfg, handler, self._app

        def _app(self, environ, start_response):
            environ["test.worker"] = self
            return app(environ, start_response)

        def count_request(self) -> None: ...

    records = _Records()
    logger = logging.getLogger("polycorn.error")
    logger.addHandler(records)
    saved_level = logger.level
    logger.setLevel(logging.DEBUG)
    loop = asyncio.new_event_loop()
    try:
        ctx = ServingContext(Worker(), loop, on_last_connection=lambda: None)
        ctx.parser = Counted
        if limits is not None:
            ctx.limits = limits
        if not compiled:
            ctx.native_respond = ctx.serve_plain = None
        assert (ctx.native_respond is not None) is compiled
        proto = HTTPProtocol(ctx, EnvironBuilder(cfg, ("127.0.0.1", 8000), "http"))
        transport = transport if transport is not None else _Transport()
        proto.connection_made(transport)
        if isinstance(raw, list):  # the reads, as given
            chunks = raw
        else:
            chunks = [raw[i:i + 1] for i in range(len(raw))] if bytewise else [raw]
        for chunk in chunks:
            if transport.closed:
                break
            proto.data_received(chunk)
        # Where the cycle left the connection: its phase, requests served, whether its
        # deadline is the keep-alive one (idle) or --timeout's, and the sans-IO
        # connection's own state (serve_plain ends a cycle with start_next_cycle's move;
        # the compiled data_received appends to its buffer). Its body writer only while a
        # response is under way: after its end nothing reads it (a whole response
        # framed by respond_whole never had one of its own).
        conn = proto.conn
        writer = None if conn._response_state is _END_TO else type(conn._writer)
        state = (proto.phase, proto.served, proto.request is None, transport.closed,
                 proto.deadline - time.monotonic() <= cfg.keepalive + 1,
                 conn._request_state, conn._response_state, conn._request is None,
                 writer, conn._continue_owed, conn._persistent, conn.fallback_reason,
                 conn._eof, bytes(conn._received or b""))
        if not transport.closed:
            proto.eof_received()
        proto.connection_lost(None)
    finally:
        logger.removeHandler(records)
        logger.setLevel(saved_level)
        with contextlib.suppress(Exception):
            loop.close()
    return (DATE_LINE.sub(b"\r\nDate: -\r\n", bytes(transport.out)), records.lines, len(calls),
            state)


def same(app, raw: bytes, bytewise: bool = False, limits: Limits | None = None) -> bytes:
    """The compiled side, before and after the Python side (which fills the caches the
    compiled side reads), answers as the Python side does."""
    first = serve(True, app, raw, bytewise, limits)
    pure = serve(False, app, raw, bytewise, limits)
    again = serve(True, app, raw, bytewise, limits)
    first, pure, again = (r[:2] + r[3:] for r in (first, pure, again))
    assert first == pure == again
    return pure[0]


@pytest.mark.parametrize("name", list(APPS))
def test_every_app_answer_is_the_pythons(name: str) -> None:
    app = APPS[name]
    for raw in REQUESTS:
        same(app, raw)
    pipelined = b"".join(REQUESTS[:6])
    same(app, pipelined)
    same(app, pipelined, bytewise=True)


def test_over_the_corpus_pipelined_and_bytewise() -> None:
    for case in VALID:
        for bytewise in (False, True):
            assert same(APPS["echo"], case.raw, bytewise, case.limits), case.name
            same(APPS["hello"], case.raw + case.raw, bytewise, case.limits)


@FUZZ
@given(app=st.sampled_from(sorted(APPS)),
       raws=st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=4),
       cut=st.integers(0, 200), bytewise=st.booleans())
def test_generated_pipelines(app: str, raws: list[bytes], cut: int, bytewise: bool) -> None:
    raw = b"".join(raws)
    same(APPS[app], raw[:cut] if cut < len(raw) else raw, bytewise)


def test_the_compiled_path_takes_and_frames_the_common_request_itself() -> None:
    raw = REQUESTS[0] * 3
    out, _, calls, _ = serve(False, APPS["hello"], raw)  # remembers the status, list and head
    # 3 heads and the EOF after them split, 3 responses framed, in Python.
    assert calls == 7 and out.count(b"HTTP/1.1 200 OK\r\n") == 3
    out, _, calls, state = serve(True, APPS["hello"], raw)
    assert calls == 1 and out.count(b"HTTP/1.1 200 OK\r\n") == 3  # the EOF only
    # serve_plain (accel_serve.c) ended the three cycles and went idle, on keep-alive's
    # deadline, as the Python cycle does.
    assert state[:5] == (Phase.IDLE, 3, True, False, True)
    # HEAD has no Content-Length writer: respond_whole in Python frames it.
    assert serve(True, APPS["hello"], REQUESTS[1])[2] == 2
    # A Content-Length body all received is taken with its head: the EOF only (the
    # second time, as below).
    serve(True, APPS["hello"], REQUESTS[4])
    assert serve(True, APPS["hello"], REQUESTS[4])[2] == 1
    # Its body split across reads, Expect: 100-continue (the 100 is owed), a trusted
    # front end's scheme header: the head is split in Python (the second time: the
    # first frames a head not seen before in Python too).
    split = len(REQUESTS[4]) - 2
    assert serve(True, APPS["hello"], [REQUESTS[4][:split], REQUESTS[4][split:]])[2] == 2
    for raw in (REQUESTS[6], REQUESTS[8]):
        serve(True, APPS["hello"], raw)
        assert serve(True, APPS["hello"], raw)[2] == 2, raw


def test_a_large_body_goes_beside_its_head_uncopied() -> None:
    body = b"z" * 20000
    app = _simple("200 OK", [("Content-Length", "20000")], [body])
    serve(False, app, REQUESTS[0])  # remembers the status, list and head
    compiled, pure = _Transport(), _Transport()
    serve(True, app, REQUESTS[0] * 2, transport=compiled)
    serve(False, app, REQUESTS[0] * 2, transport=pure)
    assert compiled.out == pure.out and compiled.out.count(body) == 2
    # The compiled response: (head, body), the app's own bytes object; the Python one
    # (_send_ready) also writes it uncopied, with the end's b"" after it.
    assert [len(parts) for parts in compiled.lines] == [2, 2]
    assert [len(parts) for parts in pure.lines] == [3, 3]
    assert all(parts[1] is body for parts in compiled.lines + pure.lines)


def test_a_drain_during_the_app_call_says_close() -> None:
    out = same(APPS["drain"], REQUESTS[0] * 2)
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 1 and b"Connection: close\r\n" in out


def test_close_is_called_once() -> None:
    Closing.closed = 0
    serve(True, APPS["with close"], REQUESTS[0])
    assert Closing.closed == 1


def test_the_compiled_start_response_is_made_only_by_respond() -> None:
    with pytest.raises(TypeError):
        accel.native.StartResponse()
    with pytest.raises(TypeError):
        accel.native.respond(APPS["hello"], {})


def test_what_the_app_sees_is_the_same() -> None:
    seen = []

    def app(environ, start_response):
        seen.append(sorted((k, v) for k, v in environ.items() if type(v) is str))
        write = start_response("200 OK", list(HELLO))
        seen.append(callable(write))
        return [b"hello"]

    serve(False, app, REQUESTS[0] + REQUESTS[2])
    pure, seen[:] = seen[:], []
    serve(True, app, REQUESTS[0] + REQUESTS[2])
    assert seen == pure and len(pure) == 4



def test_a_remembered_head_is_reused_only_for_its_whole_key() -> None:
    # accel_respond.c remembers the last head (and header list) looked up and reuses
    # it for a response with the same key parts: the same header tuples answered
    # with another status, another reason for the same code, to HEAD and HTTP/1.0
    # in turn must each get their own head, as in Python.
    statuses = ["200 OK", "404 Not Found", "200 Fine", "200 OK", "201 Created"]

    def app(environ, start_response):
        worker = environ["test.worker"]  # one per serve(): each run answers alike
        worker.answered = getattr(worker, "answered", -1) + 1
        start_response(statuses[worker.answered % 5], list(HELLO))  # the same tuples
        return [b"hello"]

    raw = b"".join(REQUESTS[n] for n in (0, 0, 1, 0, 3, 0, 0)) * 2
    out = same(app, raw)
    assert out.count(b"HTTP/1.1 ") == 14
    for line in (b"HTTP/1.1 404 Not Found\r\n", b"HTTP/1.1 200 Fine\r\n",
                 b"HTTP/1.1 201 Created\r\n"):
        assert line in out
